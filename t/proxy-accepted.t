#!/usr/bin/perl
# A proxied INVITE once it is answered 2xx (RFC 6026 §7.1, RFC 3261 §16.7):
# the proxy lets go of the call's state at once (SipProxyStatesNow back to
# zero) while its transactions stay as small remnants until timer L / M:
#   - the callee's 2xx retransmissions (its ACK was lost) still reach the
#     caller, byte for byte the first relayed 2xx;
#   - the caller's retransmitted INVITE is absorbed (no second INVITE at
#     the callee);
#   - the end-to-end ACK and the BYE still pass, and the BYE's state goes
#     with its 200 (its remnant absorbs the 200's retransmission);
#   - a 2xx from a second fork branch after the first still goes up;
#   - 40 calls leave no proxy state behind, and the remnants end with
#     their timers (SipTimerT1 50 ms: timer L/M 3.2 s).
# Raw UDP sockets play caller and callee; with SIP_TEST_ENGINES=2 the
# callee's retransmissions may land on the engine that does not hold the
# call (handed over by the branch's mark).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg);
use SipRegTest;

my $t = SipRegTest->new(vhost_conf => "SipProxyOutside On",
                        server_conf => <<"EOC");
SipTimerT1 50
# every freed pool node goes back to the system at once: a remnant that
# kept a pointer into its transaction's pool crashes on the spot
MaxMemFree 1
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /server-status>
    SetHandler server-status
</Location>
EOC
my $port = $t->sip_port;

my $uac = $t->udp_socket;
my $uas = $t->udp_socket;
my $uas_port = $uas->sockport;

sub crlf { my $s = shift; $s =~ s/\r?\n/\r\n/g; return $s }
sub counters { $t->sip_counters }
sub wait_until {
    my ($secs, $cond) = @_;
    my $end = time + $secs;
    while (time < $end) { return 1 if $cond->(); sleep 0.05 }
    return $cond->();
}

# Datagrams on $s for $secs seconds that start with $re.
sub collect {
    my ($s, $secs, $re) = @_;
    my @got;
    my $end = time + $secs;
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($s, $left) // last;
        push @got, $d if $d =~ $re;
    }
    return @got;
}

sub first {
    my ($s, $secs, $re) = @_;
    my $end = time + $secs;
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($s, $left) // return undef;
        return $d if $d =~ $re;
    }
    return undef;
}

# The callee's answer to request $req (raw), with its own To tag.
sub answer {
    my ($req, $code, $reason, $tag, $contact_port) = @_;
    my $m = parse_msg($req);
    my $via = join('', map { "Via: $_\r\n" } $m->header_elems('via'));
    my $rr = $m->header('record-route');
    return "SIP/2.0 $code $reason\r\n$via"
         . ($rr ? "Record-Route: $rr\r\n" : '')
         . 'From: ' . $m->header('from') . "\r\n"
         . 'To: ' . $m->header('to') . ";tag=$tag\r\n"
         . 'Call-ID: ' . $m->header('call-id') . "\r\n"
         . 'CSeq: ' . $m->header('cseq') . "\r\n"
         . "Contact: <sip:callee\@127.0.0.1:$contact_port>\r\nContent-Length: 0\r\n\r\n";
}

# An INVITE from the caller on socket $uac to $uri (the user of To is
# $user); through our Route when $route is set (loose routing).
sub invite {
    my ($uac, $uri, $user, $cid, $branch, $route) = @_;
    my $up = $uac->sockport;
    return crlf("INVITE $uri SIP/2.0\n"
                . "Via: SIP/2.0/UDP 127.0.0.1:$up;branch=$branch;rport\n"
                . "Max-Forwards: 70\n"
                . ($route ? "Route: <sip:127.0.0.1:$port;lr>\n" : '')
                . "From: <sip:caller\@127.0.0.1>;tag=c-$cid\n"
                . "To: <sip:$user\@127.0.0.1>\n"
                . "Call-ID: $cid\nCSeq: 1 INVITE\n"
                . "Contact: <sip:caller\@127.0.0.1:$up>\nContent-Length: 0\n\n");
}

# The callee's INVITE, routed by us to its port.
sub call_invite {
    my ($uac, $cid, $branch) = @_;
    return invite($uac, "sip:callee\@127.0.0.1:$uas_port", 'callee', $cid, $branch, 1);
}


# ---- 1. one call: the 2xx retransmissions after the proxy let go
{
    my $cid = "acc-1-$$";
    my $inv = call_invite($uac, $cid, 'z9hG4bK-acc1');
    $t->udp_send($inv, sock => $uac);
    my $got = first($uas, 3, qr/^INVITE /);
    ok($got, 'the INVITE reached the callee') or BAIL_OUT('no proxying');
    $t->udp_send(answer($got, 180, 'Ringing', 'uas1', $uas_port), sock => $uas);
    ok(first($uac, 3, qr{^SIP/2\.0 180 }), 'the caller got the 180');
    my $ok = answer($got, 200, 'OK', 'uas1', $uas_port);
    $t->udp_send($ok, sock => $uas);
    my $first = first($uac, 3, qr{^SIP/2\.0 200 });
    ok($first, 'the caller got the 200');
    unlike($first // '', qr/branch=z9hG4bKmS/, '... without the proxy\'s Via');
    ok(wait_until(2, sub { (counters()->{SipProxyStatesNow} // -1) == 0 }),
       'the proxy let go of the call once it was answered (SipProxyStatesNow 0)');
    cmp_ok(counters()->{SipClientTransactionsNow} // 0, '>=', 1,
           '... while its client transaction remains (timer M)');

    # the ACK was "lost": the callee retransmits its 200 three times
    for (1 .. 3) {
        sleep 0.1;
        $t->udp_send($ok, sock => $uas);
    }
    my @again = collect($uac, 1, qr{^SIP/2\.0 200 });
    is(scalar(@again), 3, 'each 2xx retransmission went up to the caller');
    is_deeply([ grep { $_ ne ($first // '') } @again ], [],
              '... byte for byte the 200 first relayed');

    # the caller retransmits its INVITE: absorbed (RFC 6026 Accepted)
    $t->udp_send($inv, sock => $uac);
    is(scalar(collect($uas, 0.6, qr/^INVITE /)), 0, 'a retransmitted INVITE is absorbed');

    # the ACK (end to end, a new branch) and the BYE still pass
    my $m = parse_msg($first // '');
    my $rr = $m ? $m->header('record-route') : undef;
    my $to = $m ? $m->header('to') : '';
    my $up = $uac->sockport;
    my $ack = crlf(<<"EOT");
ACK sip:callee\@127.0.0.1:$uas_port SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:$up;branch=z9hG4bK-acc1-ack;rport
Max-Forwards: 70
Route: $rr
From: <sip:caller\@127.0.0.1>;tag=c-$cid
To: $to
Call-ID: $cid
CSeq: 1 ACK
Content-Length: 0

EOT
    $t->udp_send($ack, sock => $uac);
    ok(first($uas, 3, qr/^ACK /), 'the ACK reached the callee');
    (my $bye = $ack) =~ s/^ACK /BYE /;
    $bye =~ s/CSeq: 1 ACK/CSeq: 2 BYE/;
    $bye =~ s/branch=z9hG4bK-acc1-ack/branch=z9hG4bK-acc1-bye/;
    $t->udp_send($bye, sock => $uac);
    my $byein = first($uas, 3, qr/^BYE /);
    ok($byein, 'the BYE reached the callee');
    $t->udp_send(answer($byein, 200, 'OK', 'uas1', $uas_port), sock => $uas) if $byein;
    ok(first($uac, 3, qr{^SIP/2\.0 200 .*\r\n(?:.*\r\n)*CSeq: 2 BYE}), 'the caller got the 200 for its BYE');
    ok(wait_until(1, sub { (counters()->{SipProxyStatesNow} // -1) == 0 }),
       "... and the BYE's state went with it, not after timer K (5 s)");
    # a retransmitted 200 for the BYE is absorbed by the remnant
    $t->udp_send(answer($byein, 200, 'OK', 'uas1', $uas_port), sock => $uas) if $byein;
    is(scalar(collect($uac, 0.5, qr{^SIP/2\.0 200 })), 0, '... whose retransmitted 200 is absorbed');
}

# ---- 2. two forked branches answering 200 one after the other: both go up
{
    my $uas2 = $t->udp_socket;
    my $p2 = $uas2->sockport;
    my $cid = "acc-2-$$";
    my $up = $uac->sockport;
    # two registered contacts of one AoR: the proxy forks in parallel
    my $reg = sub {
        my ($contact, $n) = @_;
        my $r = crlf(<<"EOT");
REGISTER sip:127.0.0.1:$port SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:$up;branch=z9hG4bK-accreg$n;rport
Max-Forwards: 70
From: <sip:forky\@127.0.0.1>;tag=r$n
To: <sip:forky\@127.0.0.1>
Call-ID: accreg-$$
CSeq: $n REGISTER
Contact: <sip:forky\@127.0.0.1:$contact>
Expires: 300
Content-Length: 0

EOT
        $t->udp_send($r, sock => $uac);
        return first($uac, 3, qr{^SIP/2\.0 200 });
    };
    ok($reg->($uas_port, 1) && $reg->($p2, 2), 'two contacts registered for forky');
    # with several engines the INVITE may land where the registrations are
    # replicas: the 200s left only after they were sent there
    my $inv = invite($uac, "sip:forky\@127.0.0.1:$port", 'forky', $cid, 'z9hG4bK-acc2');
    $t->udp_send($inv, sock => $uac);
    my $a = first($uas, 3, qr/^INVITE /);
    my $b = first($uas2, 3, qr/^INVITE /);
    ok($a && $b, 'both contacts got the INVITE');
    SKIP: {
        skip 'no fork', 5 unless $a && $b;
        # §9.1: a branch is cancelled once it has answered provisionally
        $t->udp_send(answer($b, 180, 'Ringing', 'fb', $p2), sock => $uas2);
        ok(first($uac, 3, qr{^SIP/2\.0 180 }), 'the second branch rang');
        $t->udp_send(answer($a, 200, 'OK', 'fa', $uas_port), sock => $uas);
        ok(first($uac, 3, qr{^SIP/2\.0 200 .*\r\n(?:.*\r\n)*To: [^\r]*tag=fa}), 'the first 200 went up');
        # the proxy CANCELs the other branch; it answers 200 anyway (a race)
        my $c = first($uas2, 3, qr/^CANCEL /);
        ok($c, 'the other branch was cancelled');
        $t->udp_send(answer($b, 200, 'OK', 'fb', $p2), sock => $uas2);
        $t->udp_send(answer($c, 200, 'OK', 'fb', $p2), sock => $uas2) if $c;
        ok(first($uac, 3, qr{^SIP/2\.0 200 .*\r\n(?:.*\r\n)*To: [^\r]*tag=fb}),
           'the second branch\'s 200 went up too (RFC 6026 §7.1)');
        ok(wait_until(2, sub { (counters()->{SipProxyStatesNow} // -1) == 0 }),
           'and the proxy let go once both had answered');
    }
}

# ---- 3. a 486: the hop-by-hop ACK comes again for its retransmission
{
    my $cid = "acc-486-$$";
    $t->udp_send(call_invite($uac, $cid, 'z9hG4bK-acc486'), sock => $uac);
    my $got = first($uas, 3, qr/^INVITE /);
    ok($got, '486 call: the INVITE reached the callee');
    my $busy = $got ? answer($got, 486, 'Busy Here', 'b1', $uas_port) : '';
    $t->udp_send($busy, sock => $uas) if $got;
    ok(first($uas, 3, qr/^ACK /), 'the proxy ACKed the 486 (§17.1.1.3)');
    my $r486 = first($uac, 3, qr{^SIP/2\.0 486 });
    ok($r486, 'the caller got the 486');
    if ($r486) {     # the caller's ACK for it (§17.1.1.3: same branch, the 486's To)
        my $m = parse_msg($r486);
        my $up = $uac->sockport;
        $t->udp_send(crlf("ACK sip:callee\@127.0.0.1:$uas_port SIP/2.0\n"
                          . "Via: SIP/2.0/UDP 127.0.0.1:$up;branch=z9hG4bK-acc486;rport\n"
                          . "Max-Forwards: 70\nFrom: " . $m->header('from') . "\nTo: "
                          . $m->header('to') . "\nCall-ID: $cid\nCSeq: 1 ACK\n"
                          . "Content-Length: 0\n\n"), sock => $uac);
    }
    ok(wait_until(1, sub { (counters()->{SipProxyStatesNow} // -1) == 0 }),
       'the proxy let go of the refused call at once (not after timer D)');
    $t->udp_send($busy, sock => $uas) if $got;
    ok(first($uas, 2, qr/^ACK /), 'a retransmitted 486 gets the ACK again from the remnant');
}

# ---- 4. forty calls: no proxy state left behind; the remnants expire
{
    my $base = counters();
    my @oks;
    for my $i (1 .. 40) {
        my $cid = "acc-3-$i-$$";
        $t->udp_send(call_invite($uac, $cid, "z9hG4bK-acc3-$i"), sock => $uac);
        my $got = first($uas, 3, qr/^INVITE /) or next;
        $t->udp_send(answer($got, 200, 'OK', "m$i", $uas_port), sock => $uas);
        push @oks, 1 if first($uac, 3, qr{^SIP/2\.0 200 });
    }
    is(scalar(@oks), 40, '40 calls answered through the proxy');
    ok(wait_until(2, sub { (counters()->{SipProxyStatesNow} // -1) == 0 }),
       'no proxy state is held for them');
    # left: the 486's client remnant (timer D: 32 s whatever T1 is)
    ok(wait_until(8, sub { (counters()->{SipClientTransactionsNow} // -1) == 1
                           && (counters()->{SipTransactionsNow} // -1) == 0 }),
       'their remnants ended with timers L and M (T1 50 ms: 3.2 s)');
}

done_testing();
