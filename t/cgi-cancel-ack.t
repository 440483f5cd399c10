#!/usr/bin/perl
# RFC 3050 conformance: CANCEL (§5.10) and ACK (§5.3, §5.11) with SIP-CGI
# scripts.  Checklist items R3, R82-R87 (and R9 on CANCEL/ACK runs).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg);

my $sdp = "v=0\r\no=caller 9 9 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";

my $t = SipCgiTest->new;
my $port = $t->sip_port;
my $uas1 = $t->peer(name => 'uas1');
my $uas2 = $t->peer(name => 'uas2');
my $u1 = $uas1->uri('one');
my $u2 = $uas2->uri('two');

sub codes { join ' ', map { $_->code } grep { $_->code != 100 } @_ }

# ---- R82, R83: CANCEL with an armed script
{
    $t->cgi_script('cx@127.0.0.1', <<"SH");
case "\$REQUEST_METHOD" in
INVITE) printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n' ;;
CANCEL) printf 'SIP/2.0 200 OK\\nX-From: cancel-run\\n\\n'
        printf 'CGI-PROXY-REQUEST $u2 SIP/2.0\\n\\n' ;;
'')     printf 'CGI-AGAIN yes SIP/2.0\\n\\n' ;;
esac
SH
    my $uac = $t->peer(name => 'uac-cx');
    my $inv = $uac->invite(uri => $t->local_uri('cx'), content_type => 'application/sdp', body => $sdp);
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    ok($uac->expect(call_id => $cid, code => 180), 'R82: (call rings: 180 relayed)');
    $t->wait_runs('cx@127.0.0.1', 2, call_id => $cid);
    $uac->cancel($inv);
    my $c200 = $uac->expect(call_id => $cid, cseq_method => 'CANCEL', final => 1);
    is($c200 && $c200->code, 200, 'R82: the server answers the CANCEL with 200');
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'R82: the server CANCELs the outstanding branch');
    is($c && $c->header_param('via', 'branch'), $f && $f->header_param('via', 'branch'), 'R82: CANCEL for the proxied INVITE (same branch)');
    my @runs = $t->wait_runs('cx@127.0.0.1', 3, call_id => $cid);
    my ($cr) = grep { ($_->{env}{REQUEST_METHOD} // '') eq 'CANCEL' } @runs;
    ok($cr, 'R83: the armed script runs for the CANCEL (REQUEST_METHOD=CANCEL)');
    is($cr && $cr->{env}{REQUEST_URI}, $t->local_uri('cx'), 'R83: CANCEL run: REQUEST_URI of the INVITE');
    is($cr && $cr->{env}{SIP_CSEQ}, '1 CANCEL', 'R83: CANCEL run: SIP_CSEQ=1 CANCEL');
    is($cr && $cr->{env}{GATEWAY_INTERFACE}, 'SIP-CGI/1.1', 'R9: CANCEL run: GATEWAY_INTERFACE');
    ok($cr && !exists $cr->{env}{RESPONSE_STATUS}, 'R7: CANCEL run: no RESPONSE_STATUS');
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f, 487) }
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'R87: the branch\'s 487 is ACKed by the server');
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 487, 'R83: the caller gets 487, not the 200 the CANCEL run wrote');
    $uac->ack($inv, $fin) if $fin;
    my @all = $uac->all(wait => 0.5, call_id => $cid, response => 1);
    ok(!(grep { ($_->header('x-from') // '') eq 'cancel-run' } @all), 'R83: nothing written on the CANCEL run is sent');
    ok(!$uas2->all(call_id => $cid), 'R83: the CGI-PROXY-REQUEST of the CANCEL run is not carried out');
}

# ---- R82: CANCEL with an unarmed script
{
    $t->cgi_script('cy@127.0.0.1', "printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac-cy');
    my $inv = $uac->invite(uri => $t->local_uri('cy'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    $uac->expect(call_id => $cid, code => 180);
    $uac->cancel($inv);
    my $c200 = $uac->expect(call_id => $cid, cseq_method => 'CANCEL', final => 1);
    is($c200 && $c200->code, 200, 'R82: unarmed script: CANCEL answered 200');
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'R82: unarmed script: the branch is CANCELled');
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f, 487) }
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 487, 'R82: unarmed script: caller gets 487');
    $uac->ack($inv, $fin) if $fin;
    sleep 0.3;
    is($t->nruns('cy@127.0.0.1', call_id => $cid), 1, 'R83 (decision): an unarmed script is not run for the CANCEL');
}

# ---- R82: CANCEL while the script runs and has no branches: killed, 487
{
    # an odd duration: procs_matching sees every process of the machine
    $t->cgi_script('cz@127.0.0.1', "sleep 5.0427\ntouch \@VAR\@/cz.finished\nprintf 'SIP/2.0 200 OK\\n\\n'");
    my $uac = $t->peer(name => 'uac-cz');
    my $inv = $uac->invite(uri => $t->local_uri('cz'));
    my $cid = $uac->call_id($inv);
    ok($uac->expect(call_id => $cid, code => 100, timeout => 2), 'R82: (100 Trying for the slow script)');
    $uac->cancel($inv);
    my $c200 = $uac->expect(call_id => $cid, cseq_method => 'CANCEL', final => 1);
    is($c200 && $c200->code, 200, 'R82: no branches: CANCEL answered 200');
    my $fin = $uac->final_for($inv, 2);
    is($fin && $fin->code, 487, 'R82: no branches: the INVITE gets 487');
    $uac->ack($inv, $fin) if $fin;
    my $path = $t->scripts_dir . '/cz@127.0.0.1';
    ok(SipTest::wait_until(3, sub { !$t->procs_matching($path) && !$t->procs_matching('sleep 5.0427') }),
       'R82: the running script (and its child) was killed');
    sleep 0.5;
    ok(!-e $t->var . '/cz.finished', 'R82: the script did not run to its end');
    ok(!(grep { $_->code == 200 } $uac->all(call_id => $cid, cseq_method => 'INVITE')), 'R82: no 200 for the cancelled INVITE');
}

# ---- R84, R87: ACK for a forwarded 486 (armed script forwarding it itself)
{
    $t->cgi_script('ack486@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'CGI-FORWARD-RESPONSE this SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac-ack486');
    my $inv = $uac->invite(uri => $t->local_uri('ack486'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 486) if $f;
    my $ack = $uas1->expect(method => 'ACK', call_id => $cid, timeout => 3);
    ok($ack, 'R87: the downstream 486 is ACKed by the server, without the script');
    if ($ack && $f) {
        my @v = $ack->header_elems('via');
        ok(@v == 1 && $v[0] =~ /^SIP\/2\.0\/UDP 127\.0\.0\.1:$port;/, 'R87: ACK with one Via, the server\'s');
        is($ack->header_param('via', 'branch'), $f->header_param('via', 'branch'), 'R87: same branch as the INVITE');
        is($ack->uri, $f->uri, 'R87: same Request-URI as the INVITE');
    }
    my @f486 = grep { $_->code == 486 } map { $uac->expect(call_id => $cid, code => 486, timeout => 1.2) // () } 1 .. 2;
    ok(@f486 >= 2, 'R84: the 486 is retransmitted to the caller until its ACK');
    $uac->ack($inv, $f486[0]) if @f486;
    my @after = $uac->all(wait => 2.5, call_id => $cid, code => 486);
    my $t_ack = time - 2.5;
    ok(!(grep { $_->{rtime} > $t_ack + 0.1 } @after), 'R84: the caller\'s ACK stops the retransmissions');
    my @runs = $t->runs('ack486@127.0.0.1', call_id => $cid);
    is(join(' ', map { $_->{env}{REQUEST_METHOD} // $_->{env}{RESPONSE_STATUS} } @runs), 'INVITE 486',
       'R84: the caller\'s ACK for the 486 does not run the (armed) script');
}

# ---- R85: ACK for a downstream 200 is proxied, script not run
{
    $t->cgi_script('ack200@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'CGI-FORWARD-RESPONSE this SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac-ack200');
    my $inv = $uac->invite(uri => $t->local_uri('ack200'), content_type => 'application/sdp', body => $sdp);
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 200, content_type => 'application/sdp', body => $sdp) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 200, 'R85: the downstream 200 reaches the caller');
    like(join('', $fin ? $fin->headers('record-route') : ()), qr/^<sip:127\.0\.0\.1:$port;lr;ftag=[^;>]+;rs=[0-9a-f]{16}>$/,
         'R85: (with the server\'s Record-Route)');
    $uac->ack($inv, $fin, content_type => 'application/sdp', body => $sdp) if $fin;
    my $ack = $uas1->expect(method => 'ACK', call_id => $cid, timeout => 3);
    ok($ack, 'R85: the caller\'s ACK for the 200 is proxied to the UAS');
    my @v = $ack ? $ack->header_elems('via') : ();
    ok(@v == 2 && $v[0] =~ /127\.0\.0\.1:$port;/ && $v[1] =~ /127\.0\.0\.1:${\ $uac->port};/,
       'R85: the proxied ACK has the server\'s Via on top of the caller\'s') or diag(join "\n", @v);
    is($ack && $ack->body, $sdp, 'R85: ACK body passed on');
    sleep 0.3;
    my @runs = $t->runs('ack200@127.0.0.1', call_id => $cid);
    is(join(' ', map { $_->{env}{REQUEST_METHOD} // $_->{env}{RESPONSE_STATUS} } @runs), 'INVITE 200',
       'R85: the ACK for the downstream 200 does not run the script');
}

# ---- R86, R3: the script's own 200 -> its ACK runs the script, at once
{
    $t->cgi_script('uas200@127.0.0.1', <<"SH");
case "\$REQUEST_METHOD" in
INVITE) printf 'SIP/2.0 200 OK\\nContact: <sip:uas200\@127.0.0.1:$port>\\nContent-Type: application/sdp\\nContent-Length: ${\ length $sdp}\\n\\n'
        cat "\$R/stdin"
        sleep 1.5 ;;
ACK)    printf 'SIP/2.0 500 Ignored\\nX-From: ack-run\\n\\n' ;;
esac
SH
    my $uac = $t->peer(name => 'uac-uas200');
    my $t0 = time;
    my $inv = $uac->invite(uri => $t->local_uri('uas200'), content_type => 'application/sdp', body => $sdp);
    my $cid = $uac->call_id($inv);
    my $fin = $uac->final_for($inv, 3);
    is($fin && $fin->code, 200, 'R86: the script answers the INVITE with its own 200');
    ok($fin && time - $t0 < 1.2, 'R3: (the 200 is sent while the script still runs)');
    my $ackbody = "v=0\r\no=ack 1 1 IN IP4 127.0.0.1\r\n";
    $uac->ack($inv, $fin, content_type => 'application/sdp', body => $ackbody) if $fin;
    my @runs = $t->wait_runs('uas200@127.0.0.1', 2, call_id => $cid, timeout => 5);
    my ($ir) = grep { ($_->{env}{REQUEST_METHOD} // '') eq 'INVITE' } @runs;
    my ($ar) = grep { ($_->{env}{REQUEST_METHOD} // '') eq 'ACK' } @runs;
    ok($ar, 'R86: the ACK for the script\'s 200 runs the script with REQUEST_METHOD=ACK');
    is($ar && $ar->{stdin}, $ackbody, 'R86: the ACK body is on stdin');
    is($ar && $ar->{env}{CONTENT_LENGTH}, length $ackbody, 'R86: CONTENT_LENGTH of the ACK body');
    is($ar && $ar->{env}{CONTENT_TYPE}, 'application/sdp', 'R86: CONTENT_TYPE of the ACK body');
    is($ar && $ar->{env}{GATEWAY_INTERFACE}, 'SIP-CGI/1.1', 'R9: ACK run: GATEWAY_INTERFACE');
    ok($ar && $ir && defined $ir->{end} && $ar->{start} < $ir->{end},
       'R3: the ACK run started while the INVITE run was still running (not queued behind it)')
        or diag(sprintf 'INVITE run %s..%s, ACK run started %s', $ir ? ($ir->{start}, $ir->{end} // 'running') : ('?', '?'),
                $ar ? $ar->{start} : '?');
    my @all = $uac->all(wait => 0.5, call_id => $cid, response => 1);
    ok(!(grep { ($_->header('x-from') // '') eq 'ack-run' } @all), 'R86: what the ACK run writes is ignored');
}

$t->assert_no_zombies;
$t->dump_log_on_failure;
$t->stop;
done_testing;
