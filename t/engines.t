#!/usr/bin/perl
# Several engines (SipEngines 2, issue 19; docs/architecture.md "Several
# engines"): both engines run and serve; UDP from many source ports reaches
# both; proxied calls whose responses land on the engine that does not own
# the transaction complete (the response is handed over by its branch); a
# CANCEL from another source port than its INVITE gets 200 and 487 (the
# engines ask each other); TCP and UDP clients; kill -9 of one engine under
# a load of calls: the other engine's calls complete, the dead one is
# restarted alone and serves; graceful restart keeps both.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use SipTest qw(parse_msg wait_until rand_token);

my $STATUS_CONF = <<"EOC";
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /server-status>
    SetHandler server-status
</Location>
SipEngines 2
EOC

my $t = SipTest->new(vhost_conf => 'SipProxyOutside On', server_conf => $STATUS_CONF);
my $port = $t->sip_port;

# ---- both engines exist
my @pids = $t->engine_pids;
is(scalar(@pids), 2, 'sip-engines.pid lists two engines');
ok($pids[0] && $pids[1] && $pids[0] != $pids[1], 'both engines are alive, two processes')
    or diag("pids: @{[ map { $_ // 'dead' } @pids ]}");
is($t->engine_pid, $pids[0], 'sip-engine.pid holds engine 0');

# ---- UDP from many source ports reaches both engines
ok($t->options_ok('udp'), 'OPTIONS over UDP answered');
$t->options_ok('udp') for 1 .. 40;
my $c = $t->sip_counters;
ok(($c->{SipEngine0MessagesIn} // 0) > 0 && ($c->{SipEngine1MessagesIn} // 0) > 0,
   'both engines received messages (per-engine counters)')
    or diag(join ' ', map { "$_=" . ($c->{$_} // 'none') } qw(SipEngine0MessagesIn SipEngine1MessagesIn));
is($c->{SipEnginePid}, $pids[0], 'SipEnginePid is engine 0');
is(($c->{SipEngine0Pid} // 0) . ' ' . ($c->{SipEngine1Pid} // 0), "$pids[0] $pids[1]",
   'per-engine pid lines');
ok(($c->{SipUdpMessagesIn} // 0)
   == ($c->{SipEngine0MessagesIn} // 0) + ($c->{SipEngine1MessagesIn} // 0),
   'the total is the sum of the engines');

# ---- TCP and UDP clients
ok($t->options_ok('tcp'), 'OPTIONS over TCP answered');
ok($t->options_ok('udp'), 'OPTIONS over UDP answered');

# ---- proxied calls: a UAS whose responses all come from one port, so they
# land on one engine whatever engine owns the call
my $uas = $t->udp_socket;
my $uas_port = $uas->sockport;

sub invite_text {
    my ($cport, $cid, $branch) = @_;
    return "INVITE sip:bob\@127.0.0.1:$uas_port SIP/2.0\r\n"
         . "Via: SIP/2.0/UDP 127.0.0.1:$cport;branch=$branch\r\nMax-Forwards: 70\r\n"
         . "From: <sip:alice\@127.0.0.1>;tag=a$cid\r\nTo: <sip:bob\@127.0.0.1>\r\n"
         . "Call-ID: $cid\r\nCSeq: 1 INVITE\r\nContact: <sip:alice\@127.0.0.1:$cport>\r\n"
         . "Content-Length: 0\r\n\r\n";
}

# The UAS's answer to a request it received (raw), with To tag.
sub answer {
    my ($raw, $code, $reason) = @_;
    my $m = parse_msg($raw);
    my $to = $m->header('to');
    $to .= ';tag=u' . rand_token(6) unless $to =~ /;tag=/;
    return "SIP/2.0 $code $reason\r\n"
         . join('', map { "Via: $_\r\n" } $m->header_elems('via'))
         . "From: " . $m->header('from') . "\r\nTo: $to\r\nCall-ID: " . $m->header('call-id')
         . "\r\nCSeq: " . $m->header('cseq') . "\r\nContent-Length: 0\r\n\r\n";
}

# Send the UAS's answer to where the request came from (the engine's socket).
sub uas_reply {
    my ($text, $from) = @_;
    send($uas, $text, 0, $from);
}

# Run $n calls, each from its own source port, all at once; the UAS answers
# 486 to each INVITE.  $during (optional) runs once after the INVITEs are
# sent.  Returns the number of calls that got their 486 within $limit s.
sub run_calls {
    my ($n, $limit, $during) = @_;
    my (%call, %by_sock);
    my $sel = IO::Select->new($uas);
    for my $i (1 .. $n) {
        my $s = $t->udp_socket;
        my $cid = "eng-$i-" . rand_token(8);
        my $inv = invite_text($s->sockport, $cid, 'z9hG4bK' . rand_token(10));
        $call{$cid} = { sock => $s, inv => $inv, sent => time, done => 0 };
        $by_sock{fileno $s} = $cid;
        $sel->add($s);
        $t->udp_send($inv, sock => $s);
    }
    $during->() if $during;
    my $end = time + $limit;
    my $left = $n;
    while ($left && time < $end) {
        for my $s ($sel->can_read(0.1)) {
            my $from = recv($s, my $buf, 70000, 0);
            next unless defined $from && length $buf;
            my $m = parse_msg($buf);
            if ($s == $uas) {
                uas_reply(answer($buf, 486, 'Busy Here'), $from)
                    if !$m->is_response && $m->method eq 'INVITE';
                next;
            }
            my $cid = $by_sock{fileno $s};
            next unless $m->is_response && $m->code == 486 && !$call{$cid}{done}++;
            $left--;
            $t->udp_send($t->ack_for($call{$cid}{inv}, $m), sock => $s);
        }
        # Timer A, roughly: the INVITEs still unanswered go again
        for my $c (grep { !$_->{done} && time - $_->{sent} > 0.5 } values %call) {
            $c->{sent} = time;
            $t->udp_send($c->{inv}, sock => $c->{sock});
        }
    }
    return $n - $left;
}

my $ho0 = $t->sip_counters->{SipHandoverSent} // 0;
is(run_calls(40, 10), 40, '40 proxied calls from 40 source ports all completed (486 relayed)');
$c = $t->sip_counters;
ok(($c->{SipHandoverSent} // 0) > $ho0, 'some responses landed on the other engine and were handed over')
    or diag("SipHandoverSent $ho0 -> " . ($c->{SipHandoverSent} // 'none'));
note(sprintf('40 calls: %d hand-overs; engine 0 %d, engine 1 %d messages in',
             ($c->{SipHandoverSent} // 0) - $ho0, $c->{SipEngine0MessagesIn} // 0,
             $c->{SipEngine1MessagesIn} // 0));
is($c->{SipHandoverDropped} // -1, 0, 'no hand-over dropped');
is($c->{SipHandoverReceived}, $c->{SipHandoverSent}, 'every hand-over was received');

# ---- a burst of accepted calls: INVITE / 200 / ACK / BYE / 200 through the
# proxy with Record-Route.  The UAS answers from one port, so most 200s land
# on the engine that did not send the INVITE and are handed over.  The ACK
# for a 2xx is routed by our Record-Route and goes end to end at once: no
# engine is asked about it (RFC 3261 §17.2.3, §16.6), so it cannot fall
# behind the BYE sent right after it (a UAS takes a BYE before the ACK as a
# broken call: the soak's failed calls).
# The UAS rings (180, to the proxy's Via) for INVITE $got; the caller on
# socket $a waits for it: (the proxy's port, the 180 or undef).
sub ring {
    my ($got, $a) = @_;
    my ($pport) = (parse_msg($got)->header_elems('via'))[0] =~ /127\.0\.0\.1:(\d+)/;
    $t->udp_send(answer($got, 180, 'Ringing'), sock => $uas, port => $pport);
    my $r180;
    my $end = time + 3;
    while (!$r180 && time < $end) {
        my $d = $t->udp_recv($a, $end - time) // last;
        $r180 = $d if $d =~ /^SIP\/2\.0 180 /;
    }
    return ($pport, $r180);
}

# The CANCEL of INVITE text $inv (§9.1: same Request-URI, Via, Call-ID, CSeq number).
sub cancel_of {
    (my $cancel = shift) =~ s/^INVITE (\S+)/CANCEL $1/;
    $cancel =~ s/^CSeq: 1 INVITE/CSeq: 1 CANCEL/m;
    $cancel =~ s/^Contact:[^\r]*\r\n//m;
    return $cancel;
}

# The UAS side of a cancelled INVITE $got: a CANCEL ($m, text $d) is
# answered 200, then the INVITE 487 (§9.2), both to the proxy's port.
sub uas_cancelled {
    my ($m, $d, $got, $pport) = @_;
    return if $m->is_response || $m->method ne 'CANCEL';
    $t->udp_send(answer($d, 200, 'OK'), sock => $uas, port => $pport);
    $t->udp_send(answer($got, 487, 'Request Terminated'), sock => $uas, port => $pport);
}

sub answer_2xx {
    my ($raw, $cseq_method) = @_;
    my $m = parse_msg($raw);
    my $to = $m->header('to');
    $to .= ';tag=u' . rand_token(6) unless $to =~ /;tag=/;
    return "SIP/2.0 200 OK\r\n"
         . join('', map { "Via: $_\r\n" } $m->header_elems('via'))
         . join('', map { "Record-Route: $_\r\n" } $m->header_elems('record-route'))
         . "From: " . $m->header('from') . "\r\nTo: $to\r\nCall-ID: " . $m->header('call-id')
         . "\r\nCSeq: " . $m->header('cseq') . "\r\nContact: <sip:bob\@127.0.0.1:$uas_port>\r\n"
         . "Content-Length: 0\r\n\r\n";
}

sub in_dialog {
    my ($c, $method, $cseq) = @_;
    my $branch = 'z9hG4bK' . rand_token(10);
    return "$method sip:bob\@127.0.0.1:$uas_port SIP/2.0\r\n"
         . "Via: SIP/2.0/UDP 127.0.0.1:" . $c->{sock}->sockport . ";branch=$branch\r\n"
         . "Max-Forwards: 70\r\n"
         . join('', map { "Route: $_\r\n" } reverse @{ $c->{rr} })
         . "From: <sip:alice\@127.0.0.1>;tag=a$c->{cid}\r\nTo: $c->{to}\r\n"
         . "Call-ID: $c->{cid}\r\nCSeq: $cseq $method\r\n"
         . "Contact: <sip:alice\@127.0.0.1:" . $c->{sock}->sockport . ">\r\n"
         . "Content-Length: 0\r\n\r\n";
}

{
    my $n = 40;
    my (%call, %by_sock, %uas_seen);
    my $sel = IO::Select->new($uas);
    my $ho_before = $t->sip_counters->{SipHandoverSent} // 0;
    my $t0 = time;
    for my $i (1 .. $n) {
        my $s = $t->udp_socket;
        my $cid = "acc-$i-" . rand_token(8);
        my $inv = invite_text($s->sockport, $cid, 'z9hG4bK' . rand_token(10));
        $call{$cid} = { sock => $s, cid => $cid, inv => $inv, sent => time };
        $by_sock{fileno $s} = $cid;
        $sel->add($s);
        $t->udp_send($inv, sock => $s);
    }
    # phase 1: every INVITE answered 200 and the 200 relayed
    my ($accepted, $end) = (0, time + 10);
    while ($accepted < $n && time < $end) {
        for my $s ($sel->can_read(0.1)) {
            my $from = recv($s, my $buf, 70000, 0);
            next unless defined $from && length $buf;
            my $m = parse_msg($buf);
            if ($s == $uas) {
                uas_reply(answer_2xx($buf), $from)
                    if !$m->is_response && $m->method eq 'INVITE';
                next;
            }
            my $c = $call{ $by_sock{fileno $s} };
            next unless $m->is_response && $m->code == 200 && !$c->{ok}++;
            $c->{rr} = [ $m->header_elems('record-route') ];
            $c->{to} = $m->header('to');
            $accepted++;
        }
        for my $c (grep { !$_->{ok} && time - $_->{sent} > 0.5 } values %call) {
            $c->{sent} = time;
            $t->udp_send($c->{inv}, sock => $c->{sock});
        }
    }
    my $took = time - $t0;
    is($accepted, $n, "a burst of $n accepted calls: every 200 relayed to its caller");
    ok($took < 2, sprintf('the burst completed within 2 s (%.2f s), no 200 waited for a '
                          . 'retransmission', $took));
    my $c = $t->sip_counters;
    ok(($c->{SipHandoverSent} // 0) > $ho_before, 'some 200s were handed over to their engine');
    is($c->{SipHandoverDropped} // -1, 0, 'no hand-over dropped in the burst');
    ok(!grep({ !@{ $_->{rr} // [] } } values %call), 'every 200 carries our Record-Route');

    # phase 2: ACK and, right behind it, BYE
    $ho_before = $c->{SipHandoverSent} // 0;
    for my $cc (values %call) {
        $t->udp_send(in_dialog($cc, 'ACK', 1), sock => $cc->{sock});
        $t->udp_send(in_dialog($cc, 'BYE', 2), sock => $cc->{sock});
    }
    my ($byes, $order_ok) = (0, 0);
    $end = time + 10;
    while ($byes < $n && time < $end) {
        for my $s ($sel->can_read(0.1)) {
            my $from = recv($s, my $buf, 70000, 0);
            next unless defined $from && length $buf;
            my $m = parse_msg($buf);
            if ($s == $uas) {
                next if $m->is_response;
                my $cid = $m->header('call-id');
                if ($m->method eq 'ACK') {
                    $uas_seen{$cid}{ack} //= time;
                }
                elsif ($m->method eq 'BYE') {
                    $order_ok++ if $uas_seen{$cid}{ack} && !$uas_seen{$cid}{bye}++;
                    uas_reply(answer_2xx($buf), $from);
                }
                next;
            }
            my $cc = $call{ $by_sock{fileno $s} };
            $byes++ if $m->is_response && $m->code == 200 && $m->header('cseq') =~ /BYE/
                       && !$cc->{bye_ok}++;
        }
    }
    is($byes, $n, "every BYE answered 200");
    is($order_ok, $n, 'the UAS got every ACK before its BYE');
    is(scalar(grep { $uas_seen{$_}{ack} } keys %uas_seen), $n, 'every 2xx ACK reached the UAS');
    $c = $t->sip_counters;
    # BYEs' 200s may cross engines (hand-overs), ACKs must not be queried:
    # a query is two datagrams per ACK; a handed-over 200 one per BYE.
    ok(($c->{SipHandoverSent} // 0) - $ho_before <= $n,
       'no 2xx ACK was queried across engines (at most one hand-over per BYE)')
        or diag('hand-overs during ACK+BYE: ' . (($c->{SipHandoverSent} // 0) - $ho_before));
    is($c->{SipHandoverDropped} // -1, 0, 'no hand-over dropped');
}

# ---- CANCEL from another source port than its INVITE: 200 and 487.
# Over several tries some CANCELs land on the engine without the INVITE.
{
    my ($ok, $tries) = (0, 10);
    my $q0 = $t->sip_counters->{SipHandoverSent} // 0;
    for my $i (1 .. $tries) {
        my $a = $t->udp_socket;
        my $b = $t->udp_socket;
        my $cid = "cancel-$i-" . rand_token(8);
        my $branch = 'z9hG4bK' . rand_token(10);
        my $inv = invite_text($a->sockport, $cid, $branch);
        $t->udp_send($inv, sock => $a);
        my $got = $t->udp_new_request($uas, 3, 'INVITE');
        next unless $got;
        my ($pport, $r180) = ring($got, $a);
        my $cancel = cancel_of($inv);
        $t->udp_send($cancel, sock => $b);     # another source port
        # the proxy cancels the branch; the UAS answers CANCEL 200, INVITE 487
        my ($c200, $i487);
        my $end = time + 4;
        while (time < $end && !($c200 && $i487)) {
            my $sel = IO::Select->new($a, $uas);
            for my $s ($sel->can_read(0.2)) {
                my $d = $t->udp_recv($s, 0) // next;
                my $m = parse_msg($d);
                if ($s == $uas) {
                    uas_cancelled($m, $d, $got, $pport);
                    next;
                }
                $c200 = 1 if $m->is_response && $m->code == 200
                             && ($m->header('cseq') // '') =~ /CANCEL/;
                if ($m->is_response && $m->code == 487) {
                    $i487 = 1;
                    $t->udp_send($t->ack_for($inv, $m), sock => $a);
                }
            }
        }
        $ok++ if $r180 && $c200 && $i487;
    }
    is($ok, $tries, 'CANCELs from another source port than their INVITE: 200 and 487 each');
    ok(($t->sip_counters->{SipHandoverSent} // 0) > $q0,
       '... some of them were asked of the other engine');
}

# ---- CANCEL and ACK over TCP for an INVITE over UDP: every TCP connection
# from 127.0.0.1 goes to one engine (hash of the peer address) while the
# UDP INVITEs spread by source port, so some INVITEs live on the other
# engine; the stream CANCEL and the ACK of the 487 are asked of it too: the
# CANCEL's 200 comes back on the connection, the 487 is not retransmitted.
{
    my ($ok, $tries) = (0, 8);
    my $q0 = $t->sip_counters->{SipHandoverSent} // 0;
    my $tcp = $t->tcp_connect;
    ok($tcp, 'a TCP connection for the CANCELs and ACKs');
    my @acked;
    for my $i (1 .. ($tcp ? $tries : 0)) {
        my $a = $t->udp_socket;
        my $cid = "tcpcancel-$i-" . rand_token(8);
        my $inv = invite_text($a->sockport, $cid, 'z9hG4bK' . rand_token(10));
        $t->udp_send($inv, sock => $a);
        my $got = $t->udp_new_request($uas, 3, 'INVITE');
        next unless $got;
        my ($pport, $r180) = ring($got, $a);
        my $cancel = cancel_of($inv);
        $t->send_raw($tcp, $cancel);
        my ($c200, $i487);
        my $end = time + 4;
        while (time < $end && !($c200 && $i487)) {
            for my $s (IO::Select->new($a, $uas, $tcp)->can_read(0.2)) {
                if ($s == $tcp) {
                    my $m = $t->read_response($tcp, 1) or next;
                    $c200 = 1 if $m->is_response && $m->code == 200
                                 && ($m->header('cseq') // '') =~ /CANCEL/;
                    next;
                }
                my $d = $t->udp_recv($s, 0) // next;
                my $m = parse_msg($d);
                if ($s == $uas) {
                    uas_cancelled($m, $d, $got, $pport);
                    next;
                }
                if ($m->is_response && $m->code == 487 && !$i487) {
                    $i487 = 1;
                    $t->send_raw($tcp, $t->ack_for($inv, $m));     # the ACK over TCP too
                    push @acked, $a;
                }
            }
        }
        $ok++ if $r180 && $c200 && $i487;
    }
    is($ok, $tries, 'CANCELs over TCP for INVITEs over UDP: 200 on the connection and 487 each');
    ok(($t->sip_counters->{SipHandoverSent} // 0) > $q0,
       '... some of them were asked of the other engine');
    # timer G (T1, 500 ms) would have sent a 487 again by now without its ACK
    sleep 1.2;
    my $again = 0;
    for my $a (@acked) {
        while (defined(my $d = $t->udp_recv($a, 0))) { $again++ if $d =~ /^SIP\/2\.0 487 / }
    }
    is($again, 0, '... and their ACKs over TCP reached the INVITEs: no 487 sent again');
}

# ---- kill -9 one engine under load
{
    @pids = $t->engine_pids;
    my $victim = $pids[1];
    my $done = run_calls(40, 20, sub { kill 'KILL', $victim });
    is($done, 40, 'kill -9 of engine 1 during 40 calls: every call completed (the other '
                  . 'engine\'s at once, the dead one\'s after its restart)');
    my @now;
    ok(wait_until(10, sub { @now = $t->engine_pids; $now[1] && $now[1] != $victim }, 0.1),
       'engine 1 was restarted (new pid in sip-engines.pid)');
    is($now[0], $pids[0], 'engine 0 kept running (same pid)');
    my $before = $t->sip_counters->{SipEngine1MessagesIn} // 0;
    $t->options_ok('udp') for 1 .. 30;
    ok(($t->sip_counters->{SipEngine1MessagesIn} // 0) > $before, 'the restarted engine serves');
    like($t->error_log, qr/sip engine \d+ \(engine 1\) died; restarting it/, 'its death was logged');
}

# ---- graceful restart keeps both
{
    my @old = $t->engine_pids;
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    my @new;
    ok(wait_until(15, sub {
        @new = $t->engine_pids;
        @new == 2 && $new[0] && $new[1] && $new[0] != $old[0] && $new[1] != $old[1]
    }, 0.2), 'two new engines after graceful');
    ok(wait_until(5, sub { $t->options_ok('udp') }, 0.1), 'UDP answered after graceful');
    is(run_calls(20, 10), 20, '20 calls after graceful');
    my $c = $t->sip_counters;
    ok(($c->{SipEngine0MessagesIn} // 0) > 0 && ($c->{SipEngine1MessagesIn} // 0) > 0,
       'both new engines serve');
}

is(scalar($t->crash_lines), 0, 'no crash in the error log');
$t->stop;
done_testing;
