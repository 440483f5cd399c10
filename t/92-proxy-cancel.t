#!/usr/bin/perl
# CANCEL through the stateful proxy (RFC 3261 §16.10, §9): a SIPp UAC
# cancels an INVITE while the SIPp UAS rings; the proxy answers the CANCEL
# with 200, sends a CANCEL on each ringing branch and relays the 487.  Over
# UDP, TCP, and with a forking script (two ringing branches).  CANCELs that
# match no transaction are tested with raw sockets.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port parse_msg rand_token);

SipTest::sipp_available() or do { done_testing; exit 1 };

my $t = SipTest->new(vhost_conf => 'SipProxyOutside On',
                     scripts => { 'fork@127.0.0.1' => "#!/bin/sh\nexit 0\n" });
my $port = $t->sip_port;

sub got { my ($h, $m) = @_; return SipTest::sipp_msgs($h, dir => 'received', method => $m) }
sub branch_of { my ($v) = @_; return SipTest::Msg::params_of($v)->{branch} // '' }

# Checks at a UAS that rang and was cancelled by the proxy.
sub check_cancelled_uas {
    my ($label, $uas, $tr) = @_;
    my ($inv) = got($uas, 'INVITE');
    my @can = got($uas, 'CANCEL');
    ok($inv && @can, "$label: UAS got INVITE and CANCEL") or return;
    my $c = $can[0];
    my @cv = $c->header_elems('via');
    my @iv = $inv->header_elems('via');
    ok(@cv == 1 && $cv[0] =~ m{^SIP/2\.0/$tr 127\.0\.0\.1:$port;}, "$label: CANCEL has one Via, the proxy's")
        or diag($c->head);
    is(branch_of($cv[0]), branch_of($iv[0]), "$label: CANCEL branch = branch of the INVITE the proxy sent");
    is($c->uri, $inv->uri, "$label: CANCEL Request-URI = INVITE's");
    for my $h (qw(call-id from to)) {
        is($c->header($h), $inv->header($h), "$label: CANCEL $h = INVITE's");
    }
    my ($n) = ($inv->header('cseq') // '') =~ /^(\d+)/;
    like($c->header('cseq') // '', qr/^\Q$n\E\s+CANCEL$/, "$label: CANCEL CSeq = INVITE's number, CANCEL");
    ok(defined $c->header('max-forwards'), "$label: CANCEL has Max-Forwards");
    my @acks = got($uas, 'ACK');
    ok(@acks, "$label: UAS got the ACK for its 487") or return;
    my @av = $acks[0]->header_elems('via');
    ok(@av == 1 && branch_of($av[0]) eq branch_of($iv[0]), "$label: ACK is the proxy's hop-by-hop ACK (one Via, INVITE branch)")
        or diag($acks[0]->head);
}

sub check_uac {
    my ($label, $uac) = @_;
    my @r = grep { $_->is_response } SipTest::sipp_msgs($uac, dir => 'received');
    my @c200 = grep { $_->code == 200 && ($_->header('cseq') // '') =~ /^1\s+CANCEL$/ } @r;
    my @i487 = grep { $_->code == 487 && ($_->header('cseq') // '') =~ /^1\s+INVITE$/ } @r;
    my @other = grep { $_->code >= 200 && !($_->code == 487 || ($_->code == 200 && $_->header('cseq') =~ /CANCEL/)) } @r;
    ok(@c200, "$label: UAC got 200 for the CANCEL");
    ok(@i487, "$label: UAC got 487 for the INVITE");
    ok(!@other, "$label: UAC got no other final response") or diag(join "\n--\n", map { $_->head } @other);
    ok(@i487 && defined $i487[0]->to_tag, "$label: 487 has a To tag");
    ok(!grep({ my @v = $_->header_elems('via'); !(@v == 1 && $v[0] =~ /127\.0\.0\.1:$uac->{port};/) } @r),
       "$label: responses at the UAC have only the UAC's Via");
    # the proxy answers the CANCEL itself, at once
    my ($sent) = SipTest::sipp_msgs($uac, dir => 'sent', method => 'CANCEL', full => 1);
    my ($ok) = grep { $_->{msg}->code == 200 && $_->{msg}->header('cseq') =~ /CANCEL/ }
        SipTest::sipp_msgs($uac, dir => 'received', full => 1);
    ok($sent && $ok && $ok->{time} - $sent->{time} < 0.5, "$label: 200 for the CANCEL within 0.5 s");
}

# ---- one UAS, UDP and TCP
for my $tr (qw(UDP TCP)) {
    my $st = $tr eq 'UDP' ? 'u1' : 't1';
    my $uas = $t->sipp_start(name => "ring-$tr", sf => 'proxy-uas-ring-cancel.xml', m => 1, transport => $st);
    my $uac = $t->sipp_start(name => "uac-cancel-$tr", sf => 'proxy-uac-cancel.xml', m => 1, transport => $st,
                             service => 'bob', remote => "127.0.0.1:$uas->{port}", rsa => "127.0.0.1:$port",
                             keys => { uri_params => $tr eq 'TCP' ? ';transport=tcp' : '' });
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($uas, calls => 1);
    check_uac("$tr", $uac);
    check_cancelled_uas("$tr", $uas, $tr);
}

# ---- forking: both branches ring, the CANCEL reaches both, one 487 goes up
{
    my @uas = map { $t->sipp_start(name => "forkring$_", sf => 'proxy-uas-ring-cancel.xml', m => 1) } 1, 2;
    my $out = join '', map { "CGI-PROXY-REQUEST sip:$_->{name}\@127.0.0.1:$_->{port} SIP/2.0\\n\\n" } @uas;
    $t->write_script('fork@127.0.0.1', text => "#!/bin/sh\nprintf '$out'\n");
    my $uac = $t->sipp_start(name => 'uac-cancel-fork', sf => 'proxy-uac-cancel.xml', m => 1,
                             service => 'fork', remote => "127.0.0.1:$port", keys => { uri_params => '' });
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($_, calls => 1) for @uas;
    check_uac('fork', $uac);
    check_cancelled_uas("fork: $_->{name}", $_, 'UDP') for @uas;
    my @p = grep { $_->code == 180 } SipTest::sipp_msgs($uac, dir => 'received');
    is(scalar(@p), 2, 'fork: UAC got both 180s');
    my @f = grep { $_->code == 487 } SipTest::sipp_msgs($uac, dir => 'received');
    my %tags = map { ($_->to_tag // '') => 1 } @f;
    is(scalar(keys %tags), 1, 'fork: exactly one 487 (one To tag) sent upstream');
}

# ---- CANCEL before the branch sent any provisional response (raw sockets):
#      the proxy answers the CANCEL at once but sends its own CANCEL only
#      after a provisional response arrived (§9.1, §16.10)
{
    my $up = free_port();
    my $u = $t->udp_socket(port => $up);
    my $s = $t->udp_socket;
    my $inv = $t->sip_request(method => 'INVITE', sock => $s, uri => "sip:dave\@127.0.0.1:$up",
                              call_id => 'early-cancel-' . rand_token(8) . '@127.0.0.1');
    $t->udp_send($inv, sock => $s);
    my $got = sub {     # next request of method $m at the UAS socket
        my ($m, $timeout) = @_;
        my $end = time + $timeout;
        while ((my $left = $end - time) > 0) {
            my $d = $t->udp_recv($u, $left) // return undef;
            my $msg = parse_msg($d);
            return $msg if ($msg->method // '') eq $m;
        }
        return undef;
    };
    my $pinv = $got->('INVITE', 3);
    ok($pinv, 'early CANCEL: INVITE proxied to the raw UAS');
    my @r = $t->udp_collect($s, 0.2);
    ok(scalar(grep { $_->[1] =~ m{^SIP/2\.0 100 } } @r), 'early CANCEL: 100 Trying from the proxy');
    (my $cancel = $inv) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^CSeq: 1 INVITE/CSeq: 1 CANCEL/m;
    $cancel =~ s/^Content-Type:[^\n]*\n//mi;
    $t->udp_send($cancel, sock => $s);
    my @c = map { parse_msg($_->[1]) } $t->udp_collect($s, 0.5);
    ok(scalar(grep { $_->code == 200 && $_->header('cseq') =~ /CANCEL/ } @c), 'early CANCEL: 200 for the CANCEL at once')
        or diag(join "\n--\n", map { $_->head } @c);
    my $early = $got->('CANCEL', 1);
    ok(!$early, 'early CANCEL: no CANCEL to a branch that sent no provisional response yet');
    if ($pinv) {
        my $vias = join '', map { "Via: $_\r\n" } $pinv->headers('via');
        my $resp = sub {
            my ($code, $reason, $req) = @_;
            return "SIP/2.0 $code $reason\r\n" . join('', map { "Via: $_\r\n" } $req->headers('via'))
                . 'From: ' . $req->header('from') . "\r\nTo: " . $req->header('to') . ";tag=uasT\r\n"
                . 'Call-ID: ' . $req->header('call-id') . "\r\nCSeq: " . $req->header('cseq') . "\r\n"
                . "Content-Length: 0\r\n\r\n";
        };
        $t->udp_send($resp->(180, 'Ringing', $pinv), sock => $u, port => $port);
        my $pc = $early // $got->('CANCEL', 3);
        ok($pc, 'early CANCEL: the branch is CANCELled once its 180 arrived');
        if ($pc) {
            $t->udp_send($resp->(200, 'OK', $pc), sock => $u, port => $port);
            $t->udp_send($resp->(487, 'Request Terminated', $pinv), sock => $u, port => $port);
            ok($got->('ACK', 3), 'early CANCEL: the proxy ACKed the 487');
        }
        my @f = grep { $_->is_final && $_->header('cseq') =~ /INVITE/ } map { parse_msg($_->[1]) } $t->udp_collect($s, 1);
        is(@f ? $f[0]->code : 0, 487, 'early CANCEL: UAC got 487 for the INVITE');
        $t->udp_send($t->ack_for($inv, $f[0]), sock => $s) if @f;
    }
}

# ---- CANCEL matching no transaction, for this server: 481
{
    my $s = $t->udp_socket;
    my $raw = $t->sip_request(method => 'CANCEL', sock => $s, uri => "sip:nobody\@127.0.0.1:$port",
                              call_id => 'nocancel-' . rand_token(8) . '@127.0.0.1');
    my @r = $t->udp_req($raw, 3, sock => $s);
    is(@r ? $r[-1]->code : 0, 481, 'CANCEL for an unknown transaction (UDP): 481');
    $t->check_mirrored($raw, $r[-1], 'CANCEL 481') if @r;

    my $c = $t->tcp_connect or die "tcp connect: $!";
    my $raw2 = $t->sip_request(method => 'CANCEL', transport => 'TCP', sock => $c,
                               uri => "sip:nobody\@127.0.0.1:$port");
    my @r2 = $t->tcp_request($raw2, 3, sock => $c);
    is(@r2 ? $r2[-1]->code : 0, 481, 'CANCEL for an unknown transaction (TCP): 481');
}

# ---- CANCEL matching no transaction, for a foreign domain (SipProxyOutside
#      On): RFC 3261 §16.10 says a proxy without a response context MUST
#      forward it statelessly.
{
    my $tport = free_port();
    my $target = $t->udp_socket(port => $tport);
    my $s = $t->udp_socket;
    my $raw = $t->sip_request(method => 'CANCEL', sock => $s, uri => "sip:carol\@127.0.0.1:$tport",
                              call_id => 'fwdcancel-' . rand_token(8) . '@127.0.0.1');
    $t->udp_send($raw, sock => $s);
    my $fwd = parse_msg($t->udp_recv($target, 3));
    my @back = $t->udp_collect($s, 0.5);
    ok($fwd && ($fwd->method // '') eq 'CANCEL', 'foreign CANCEL without transaction is forwarded to its Request-URI (§16.10)')
        or diag("sent:\n$raw\ngot at the client instead:\n" . join("\n--\n", map { $_->[1] } @back));
    if ($fwd) {
        my @v = $fwd->header_elems('via');
        ok(@v == 2 && $v[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$port;}, 'forwarded CANCEL has the proxy Via on top of ours')
            or diag($fwd->head);
    }
    ok(!grep({ $_->[1] =~ m{^SIP/2\.0 481} } @back), 'no 481 for a foreign CANCEL without transaction');
}

ok($t->options_ok('udp'), 'server still answers');
$t->dump_log_on_failure;
$t->stop;
done_testing;
