#!/usr/bin/perl
# Interop with a SIP user agent nobody here wrote: baresip (Debian package),
# headless on loopback, driven through its ctrl_tcp module (t/lib/SipPhone.pm),
# against httpd + mod_sip configured like conf/run.conf.in plus digest
# authentication (SipAuth On in <Location "/">, an htdigest file).
#
# Each scenario runs over UDP and over TCP (phones with ;transport=tcp in
# their AoR and outbound proxy):
#   register with digest; A calls B through the proxy and the caller hangs
#   up; the callee hangs up; hold/resume (caller and callee); CANCEL;
#   MESSAGE; a script that forwards D's calls to C on the same server;
#   redirect mode (a second server with SipMode redirect) with and without
#   an outbound proxy.
# Every scenario checks the call state in both phones (ctrl_tcp events,
# listcalls: both ended, no stuck call), the SIP each phone sent and
# received (baresip's -s trace), and the server's counters
# (/server-status?auto): no crash, restart, bad message, send error, script
# failure or client transaction timeout, responses counted, no traffic on
# the other transport.
#
# Each scenario once failed with these phones (issue 11): the caller's BYE
# challenged, TCP phones' ACK over UDP, a script's forward to a user of
# ours looping, redirect through an outbound proxy refused, credentials
# passed on and headers rewritten.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(wait_until);
use SipPhone;

SipPhone::available() or do { done_testing; exit 1 };
note('baresip ' . SipPhone::version());

my $realm  = 'sip.test';
my %pw     = (alice => 'alice-pw', bob => 'bob-pw', carol => 'carol-pw', dave => 'dave-pw');


sub server { return SipPhone::interop_server(users => \%pw, realm => $realm, @_) }
sub stats  { return SipPhone::server_status(@_) }

sub delta { my ($a, $b, $k) = @_; return ($b->{$k} // 0) - ($a->{$k} // 0) }

# Counters after a scenario: nothing went wrong in the server, at least
# $o{ok2xx} 2xx answers, and no message on the transport not in use.
sub check_counters {
    my ($t, $label, $before, $tr, %o) = @_;
    my $after = stats($t);
    ok(scalar(keys %$after), "$label: server-status?auto answers") or return $after;
    my %bad = map { $_ => delta($before, $after, $_) }
        qw(SipEngineCrashes SipEngineRestarts SipBadMessages SipSendErrors SipScriptsFailed
           SipClientTransactionTimeouts SipResponses5xx SipResponses6xx);
    is_deeply({ map { $_ => $bad{$_} } grep { $bad{$_} } keys %bad }, {},
              "$label: no crash, restart, bad message, send error, script failure, timeout, 5xx/6xx")
        or diag(explain(\%bad));
    cmp_ok(delta($before, $after, 'SipResponses2xx'), '>=', $o{ok2xx}, "$label: at least $o{ok2xx} 2xx counted")
        if $o{ok2xx};
    cmp_ok(delta($before, $after, 'SipResponses3xx'), '>=', $o{ok3xx}, "$label: at least $o{ok3xx} 3xx counted")
        if $o{ok3xx};
    my ($used, $other) = $tr eq 'tcp' ? qw(Tcp Udp) : qw(Udp Tcp);
    cmp_ok(delta($before, $after, "Sip${used}MessagesIn"), '>', 0, "$label: messages in over $tr counted")
        if $o{ok2xx};
    is(delta($before, $after, "Sip${other}MessagesIn") + delta($before, $after, "Sip${other}MessagesOut"), 0,
       "$label: no message over the other transport");
    return $after;
}

# Both phones: no call left (listcalls says 0).
sub no_calls {
    my ($label, @phones) = @_;
    for my $p (@phones) {
        my $n;
        wait_until(5, sub { $n = $p->active_calls; $n == 0 }, 0.2);
        is($n, 0, "$label: " . $p->name . ' has no call left');
    }
}

# Hang up whatever a phone still has (after a failing scenario) so the next
# one starts clean.
sub cleanup {
    for my $p (@_) {
        for (1 .. 4) {
            last if $p->active_calls <= 0;
            $p->cmd('hangup');
            $p->settle(0.3);
        }
        $p->mark;
    }
}

# The final response to the last request $method the phone sent: its code,
# or 0.  Waits up to 3 s for $want (a challenge may be answered first).
sub answer_to {
    my ($p, $method, $want) = @_;
    my $code = 0;
    wait_until(3, sub {
        my @req = $p->msgs(method => $method, dir => 'sent');
        return 0 unless @req;
        my $cseq = $req[-1]{msg}->header('cseq');
        my @r = grep { $_->{dir} eq 'received' && $_->{msg}->is_final && $_->{msg}->header('cseq') eq $cseq }
                $p->msgs(cseq => $method);
        $code = @r ? $r[-1]{msg}->code : 0;
        return $code == $want;
    }, 0.1);
    return $code;
}

# Requests a TCP phone sent over anything else than TCP.
sub non_tcp_requests {
    my ($p, $from) = @_;
    my @e = grep { $_->{dir} eq 'sent' && $_->{proto} ne 'TCP' } ($p->trace)[$from .. $#{ [ $p->trace ] }];
    return map { $_->{msg}->start_line } @e;
}

sub trace_len { my @t = $_[0]->trace; return scalar @t }

# Dial $to from $a; wait until both $a and $b have the call established.
sub establish {
    my ($label, $a, $b, $to) = @_;
    $_->mark for $a, $b;
    my $r = $a->cmd(dial => $to);
    { ok($r && $r->{ok}, "$label: dial accepted by " . $a->name); }
    my $ea = $a->wait_event(type => 'CALL_ESTABLISHED', timeout => 8);
    my $eb = $b->wait_event(type => 'CALL_ESTABLISHED', timeout => 2);
    ok($ea, "$label: established at the caller " . $a->name)
        or diag(join "\n", map { "$_->{type} $_->{param}" } grep { defined $_->{param} } $a->events);
    ok($eb, "$label: established at the callee " . $b->name);
    is($eb && $eb->{direction}, 'incoming', "$label: incoming at the callee");
    return $ea && $eb;
}

# ======================================================================
my $t = server(scripts => {
    # forwards every call for dave to carol, on this server; a REGISTER (and
    # anything else) gets the server's default handling
    'dave@127.0.0.1' => "#!/bin/sh\n[ \"\$REQUEST_METHOD\" = INVITE ] || exit 0\n"
                      . "printf 'CGI-PROXY-REQUEST sip:carol\@127.0.0.1:\@SIPPORT\@ SIP/2.0\\n\\n'\n",
});
my $port = $t->sip_port;
my $s0 = stats($t);
ok(defined $s0->{SipRegistrationsNow}, 'mod_status shows the SIP counters');

for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    my $s = stats($t);
    my $s_reg = $s;
    my $base_regs = $s->{SipRegistrationsNow} // 0;

    # ------------------------------------------------------------ register
    my %ph;
    for my $u (qw(alice bob carol dave)) {
        $ph{$u} = SipPhone->new(t => $t, user => $u, password => $pw{$u}, transport => $tr,
                                name => "$u-$tr", contacts => [ "sip:bob\@127.0.0.1:$port" . ($tr eq 'tcp' ? ';transport=tcp' : '') ]);
    }
    my ($A, $B, $C, $D) = @ph{qw(alice bob carol dave)};
    for my $p ($A, $B, $C, $D) {
        ok($p->registered, "$T register: " . $p->name . ' REGISTER_OK') or diag($p->flow);
        my @reg = $p->msgs(cseq => 'REGISTER', responses => 1, dir => 'received');
        my @codes = map { $_->{msg}->code } @reg;
        is("@codes[0,1]", '401 200', "$T register: " . $p->name . ' challenged (401) then 200 with digest');
        my ($cred) = grep { $_->{msg}->header('authorization') } $p->msgs(method => 'REGISTER', dir => 'sent');
        like($cred ? $cred->{msg}->header('authorization') : '', qr/^Digest username="\Q${\ $p->user }\E", realm="\Q$realm\E"/,
             "$T register: " . $p->name . ' answered with Digest credentials for the realm');
        ok(!grep({ $_->{proto} ne $T } $p->msgs(dir => 'sent')), "$T register: " . $p->name . " sent over $T only");
    }
    $s = check_counters($t, "$T register", $s, $tr, ok2xx => 4);
    is($s->{SipRegistrationsNow} - $base_regs, 4, "$T register: SipRegistrationsNow +4");
    cmp_ok(delta($s_reg, $s, 'SipRegistersAccepted'), '>=', 4, "$T register: SipRegistersAccepted +4 (at least)");

    # ------------------------------------------------ A calls B, A hangs up
    {
        my $L = "$T caller hangs up";
        my $mark = trace_len($A);
        if (establish($L, $A, $B, $A->uri_for('bob'))) {
            my ($inv) = $B->msgs(method => 'INVITE', dir => 'received');
            like($inv ? join(',', $inv->{msg}->headers('record-route')) : '', qr/<sip:127\.0\.0\.1:$port[;>]/,
                 "$L: the INVITE at B was record-routed by the server");
            {
                ok($inv && !defined $inv->{msg}->header('proxy-authorization') && !defined $inv->{msg}->header('authorization'),
                   "$L: the server did not pass A's credentials on to B");
            }
            sleep 0.3;
            $A->cmd('hangup');
            ok($A->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at A");
            {
                ok($B->wait_event(type => 'CALL_CLOSED', timeout => 5), "$L: closed at B (the BYE got through)");
                is(answer_to($A, 'BYE', 200), 200, "$L: A's BYE answered 200") or diag($A->flow(6));
                no_calls($L, $B);
            }
            no_calls($L, $A);
            is(join(', ', non_tcp_requests($A, $mark)), '', "$L: A sent every request over TCP") if $tr eq 'tcp';
        }
        cleanup($A, $B);
        $s = check_counters($t, $L, $s, $tr, ok2xx => 1);
    }

    # ------------------------------------------------ A calls B, B hangs up
    {
        my $L = "$T callee hangs up";
        my $mark = trace_len($B);
        if (establish($L, $A, $B, $A->uri_for('bob'))) {
            sleep 0.3;
            $B->cmd('hangup');
            ok($B->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at B");
            ok($A->wait_event(type => 'CALL_CLOSED', timeout => 5), "$L: closed at A (the BYE got through)");
            is(answer_to($B, 'BYE', 200), 200, "$L: B's BYE answered 200") or diag($B->flow(6));
            no_calls($L, $A, $B);
            is(join(', ', non_tcp_requests($B, $mark)), '', "$L: B sent every request over TCP") if $tr eq 'tcp';
        }
        cleanup($A, $B);
        $s = check_counters($t, $L, $s, $tr, ok2xx => 2);
    }

    # ------------------------------------------------ hold / resume
    for my $who (qw(caller callee)) {
        my $L = "$T hold/resume by the $who";
        if (establish($L, $A, $B, $A->uri_for('bob'))) {
            my ($H, $O) = $who eq 'caller' ? ($A, $B) : ($B, $A);
            $H->cmd('hold');
            my $got = wait_until(3, sub {
                grep { $_->{msg}->body =~ /^a=sendonly/m } $O->msgs(method => 'INVITE', dir => 'received') }, 0.1);
            ok($got, "$L: the other phone got the re-INVITE with a=sendonly") or diag($H->flow(8));
            ok($got && wait_until(3, sub { grep { $_->{msg}->code == 200 && $_->{msg}->body =~ /^a=recvonly/m }
                                   $H->msgs(cseq => 'INVITE', dir => 'received') }, 0.1),
               "$L: ... and answered 200 with a=recvonly");
            my $n = scalar(my @x = $O->msgs(method => 'INVITE', dir => 'received'));
            $H->cmd('resume');
            ok(wait_until(5, sub {
                my @i = $O->msgs(method => 'INVITE', dir => 'received');
                @i > $n && $i[-1]{msg}->body =~ /^a=sendrecv/m }, 0.1),
               "$L: the other phone got the resuming re-INVITE with a=sendrecv") or diag($H->flow(8));
            is(answer_to($H, 'INVITE', 200), 200, "$L: the resume answered 200");
            # the callee ends the call (the caller's BYE is item 1)
            $B->cmd('hangup');
            ok($A->wait_event(type => 'CALL_CLOSED', timeout => 5), "$L: closed at A");
            ok($B->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at B");
            no_calls($L, $A, $B);
        }
        cleanup($A, $B);
        $s = check_counters($t, $L, $s, $tr, ok2xx => 2);
    }

    # ------------------------------------------------ CANCEL
    {
        my $L = "$T CANCEL";
        $B->cmd(answermode => 'manual');
        $_->mark for $A, $B;
        $A->cmd(dial => $A->uri_for('bob'));
        ok($B->wait_event(type => 'CALL_INCOMING', timeout => 5), "$L: B rings (answermode manual)");
        ok($A->wait_event(type => 'CALL_RINGING', timeout => 3), "$L: A hears ringing");
        $A->cmd('hangup');
        ok($A->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at A");
        my $eb = $B->wait_event(type => 'CALL_CLOSED', timeout => 5);
        ok($eb, "$L: closed at B (the CANCEL got through)");
        is(answer_to($A, 'CANCEL', 200), 200, "$L: A's CANCEL answered 200")
            or diag($A->flow(6));
        is(answer_to($A, 'INVITE', 487), 487, "$L: A's INVITE ended with 487")
            or diag($A->flow(6));
        ok(grep({ $_->{dir} eq 'sent' && $_->{msg}->code == 487 } $B->msgs(cseq => 'INVITE')), "$L: B answered its INVITE 487");
        no_calls($L, $A, $B);
        $B->cmd(answermode => 'auto');
        cleanup($A, $B);
        $s = check_counters($t, $L, $s, $tr, ok2xx => 1);
    }

    # ------------------------------------------------ MESSAGE
    {
        my $L = "$T MESSAGE";
        my $n = scalar(my @x = $B->msgs(method => 'MESSAGE', dir => 'received'));
        my $text = "hello bob over $tr";
        my $r = $A->cmd(message => $text);
        ok($r && $r->{ok}, "$L: A's message command accepted");
        my $got;
        ok(wait_until(5, sub { my @m = $B->msgs(method => 'MESSAGE', dir => 'received');
                               $got = $m[-1] if @m > $n; $got }, 0.1), "$L: B received the MESSAGE");
        is($got && $got->{msg}->body, $text, "$L: with A's text");
        like($got ? $got->{msg}->header('from') // '' : '', qr/sip:alice\@127\.0\.0\.1/, "$L: from alice");
        is(answer_to($A, 'MESSAGE', 200), 200, "$L: A got 200 for it") or diag($A->flow(6));
        ok($got && !defined $got->{msg}->header('authorization') && !defined $got->{msg}->header('proxy-authorization'),
           "$L: the server did not pass A's credentials on to B");
        $s = check_counters($t, $L, $s, $tr, ok2xx => 1);
    }

    # ------------------------------------------------ script forwards D's calls to C
    {
        my $L = "$T script forwards D to C";
        $D->mark;
        my $ok;
        {
            $ok = establish($L, $A, $C, $A->uri_for('dave'));
        }
        ok(!$D->wait_event(type => 'CALL_INCOMING', timeout => 0.2), "$L: D's own phone did not ring");
        if ($ok) {
            $C->cmd('hangup');
            ok($A->wait_event(type => 'CALL_CLOSED', timeout => 5), "$L: closed at A");
            ok($C->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at C");
        } else {
            diag("$L:\n" . $A->flow(8));
        }
        $A->wait_event(type => 'CALL_CLOSED', timeout => 5) unless $ok;
        no_calls($L, $A, $C, $D);
        cleanup($A, $C, $D);
        $s = check_counters($t, $L, $s, $tr, ok2xx => 1);
    }

    # ------------------------------------------------ stop the phones
    for my $p ($A, $B, $C, $D) {
        ok($p->stop, "$T: " . $p->name . ' quit by itself');
    }
    my $regs;
    ok(wait_until(5, sub { $regs = stats($t)->{SipRegistrationsNow}; $regs == $base_regs }, 0.1),
       "$T: the phones unregistered when they quit (SipRegistrationsNow back to $base_regs)") or diag("now $regs");
}

# ======================================================================
# Redirect mode: a second server with SipMode redirect.  A's INVITE for B
# gets 302 with B's contact; A calls that contact, directly (no outbound
# proxy) or through the server (outbound proxy).
my $r = server(vhost => [ 'SipMode redirect' ]);
my $rport = $r->sip_port;
for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    for my $ob (0, 1) {
        my $L = "$T redirect " . ($ob ? 'with' : 'without') . ' outbound proxy';
        my $s = stats($r);
        my $A = SipPhone->new(t => $r, user => 'alice', password => $pw{alice}, transport => $tr,
                              name => "ralice-$tr-$ob", outbound => $ob);
        my $B = SipPhone->new(t => $r, user => 'bob', password => $pw{bob}, transport => $tr,
                              name => "rbob-$tr-$ob", outbound => $ob);
        ok($A->registered && $B->registered, "$L: both registered");
        my $ok;
        {
            $ok = establish($L, $A, $B, $A->uri_for('bob'));
        }
        my @r3 = grep { $_->{msg}->code == 302 } $A->msgs(cseq => 'INVITE', dir => 'received');
        ok(@r3, "$L: A's INVITE got 302");
        like(@r3 ? $r3[0]{msg}->header('contact') // '' : '', qr/sip:bob-[^@]*\@127\.0\.0\.1:${\ $B->sip_port }/,
             "$L: with B's registered contact");
        my ($inv) = $B->msgs(method => 'INVITE', dir => 'received');
        if ($ob) {
            ok($inv && grep({ /127\.0\.0\.1:$rport/ } $inv->{msg}->header_elems('via')), "$L: the INVITE reached B through the server");
        } else {
            ok($inv && !grep({ /127\.0\.0\.1:$rport/ } $inv->{msg}->header_elems('via')), "$L: the INVITE reached B directly");
        }
        if ($ok) {
            $A->cmd('hangup');
            ok($A->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at A");
            ok($B->wait_event(type => 'CALL_CLOSED', timeout => 5), "$L: closed at B");
        } else {
            diag("$L:\n" . $A->flow(10));
        }
        $A->wait_event(type => 'CALL_CLOSED', timeout => 5) unless $ok;
        no_calls($L, $A, $B);
        cleanup($A, $B);
        $s = check_counters($r, $L, $s, $tr, ok3xx => 1, ok2xx => 2);
        ok($_->stop, "$L: " . $_->name . ' quit by itself') for $A, $B;
    }
}

my $end = stats($t);
# an INVITE client transaction answered 2xx stays (RFC 6026 Accepted state)
# for timer M = 64*T1 = 32 s, to pass on retransmitted 2xx
ok(wait_until(40, sub { stats($t)->{SipClientTransactionsNow} == 0 }, 0.2),
   'no client transaction left in the proxy (after timer M)');
ok(wait_until(5, sub { stats($t)->{SipTransactionsNow} == 0 }, 0.2), 'no server transaction left either');
is(scalar(() = $t->error_log =~ /no ACK for 2\d\d/g), 0,
   'no "no ACK" line for the proxied 2xx (their ACKs go end to end, not to our transaction)');
$r->stop;
$t->stop;
done_testing;
