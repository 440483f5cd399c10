#!/usr/bin/perl
# RFC 3050 conformance: the RFC's own examples and walk-throughs, end to
# end (scenarios T1-T14 of the RFC digest).  T11 (REGISTER) waits for the
# registrar issue; T14 is guidance for script authors, checked here only
# for the server's part (a script that adds no headers leaves the
# end-to-end headers and Authorization as they were).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg rand_token);

my $sdp = "v=0\r\no=caller 5 5 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4004 RTP/AVP 0\r\n";

my $t = SipCgiTest->new;
my $port = $t->sip_port;
my $uas1 = $t->peer(name => 'uas1');
my $uas2 = $t->peer(name => 'uas2');
my $uas3 = $t->peer(name => 'uas3');
my ($u1, $u2, $u3) = ($uas1->uri('loc1'), $uas2->uri('loc2'), $uas3->uri('third'));

sub codes { join ' ', map { $_->code } grep { $_->code != 100 } @_ }
sub statuses { join ' ', map { $_->{env}{REQUEST_METHOD} // $_->{env}{RESPONSE_STATUS} } @_ }
sub req_resp_script {
    my ($name, $req, $resp) = @_;
    $t->cgi_script("$name\@127.0.0.1", "if [ -n \"\$REQUEST_METHOD\" ]; then\n    :\n$req\nelse\n    :\n$resp\nfi\n");
}

# ---- T1: the script answers 200 itself; its ACK runs it again
{
    $t->cgi_script('t1@127.0.0.1', "printf 'SIP/2.0 200 OK\\n\\n'");
    my $uac = $t->peer(name => 'uac-t1');
    my $inv = $uac->invite(uri => $t->local_uri('t1'), content_type => 'application/sdp', body => $sdp);
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 200, 'T1: \'SIP/2.0 200 OK\' alone answers the INVITE with 200');
    $t->check_mirrored($inv, $fin, 'T1: 200 built from the request', src_port => $uac->port) if $fin;
    $uac->ack($inv, $fin) if $fin;
    my @runs = $t->wait_runs('t1@127.0.0.1', 2, call_id => $uac->call_id($inv));
    is(statuses(@runs), 'INVITE ACK', 'T1: the ACK for the script\'s 200 runs the script (REQUEST_METHOD=ACK)');
}

# ---- T2: proxy with an added Contact
{
    my $dante = $uas1->uri('dante');
    $t->cgi_script('t2@127.0.0.1', "printf 'CGI-PROXY-REQUEST $dante SIP/2.0\\nContact: sip:server1\@company.com\\n\\n'");
    my $uac = $t->peer(name => 'uac-t2');
    my $inv = $uac->invite(uri => $t->local_uri('t2'), content_type => 'application/sdp', body => $sdp,
                           headers => [ Contact => '<sip:caller@127.0.0.1:5999>' ]);
    my $f = $uas1->expect(method => 'INVITE', call_id => $uac->call_id($inv));
    is($f && $f->uri, $dante, 'T2: INVITE sent to the CGI-PROXY-REQUEST URI');
    my @v = $f ? $f->header_elems('via') : ();
    ok(@v == 2 && $v[0] =~ /127\.0\.0\.1:$port;branch=z9hG4bK/, 'T2: new Via on top');
    is($f && $f->header('max-forwards'), '69', 'T2: Max-Forwards decremented');
    is(join(' | ', $f ? $f->headers('contact') : ()), 'sip:server1@company.com', 'T2: Contact replaced by the script\'s');
    is($f && $f->body, $sdp, 'T2: body unchanged');
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'T2: the UAS\'s answer reaches the caller');
    $uac->ack($inv, $fin) if $fin;
}

# ---- T3: delete a header
{
    $t->cgi_script('t3@127.0.0.1', "printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\nCGI-Remove: Subject\\n\\n'");
    my $uac = $t->peer(name => 'uac-t3');
    my $inv = $uac->invite(uri => $t->local_uri('t3'), headers => [ Subject => 'secret subject', 'X-Other' => 'stays' ]);
    my $f = $uas1->expect(method => 'INVITE', call_id => $uac->call_id($inv));
    ok($f && !defined $f->header('subject'), 'T3: forwarded without Subject');
    ok($f && !(grep { $_->[0] =~ /^cgi-/i } $f->header_list), 'T3: forwarded without CGI-* headers');
    is($f && $f->header('x-other'), 'stays', 'T3: other headers kept');
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin) if $fin;
}

# ---- T4: forward a chosen response (token kept in the cookie)
{
    req_resp_script('t4', "    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
        "    if [ -z \"\$SCRIPT_COOKIE\" ]; then\n"
      . "        printf 'CGI-SET-COOKIE %s SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n' \"\$RESPONSE_TOKEN\"\n"
      . "    else\n"
      . "        printf 'CGI-FORWARD-RESPONSE %s SIP/2.0\\n\\n' \"\$SCRIPT_COOKIE\"\n"
      . "    fi");
    my $uac = $t->peer(name => 'uac-t4');
    my $inv = $uac->invite(uri => $t->local_uri('t4'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 486, headers => [ 'X-Which' => 'loc1' ]) if $f1;
    $t->wait_runs('t4@127.0.0.1', 2, call_id => $cid);
    $uas2->reply($f2, 415, reason => 'Unsupported Media Type', headers => [ 'X-Which' => 'loc2' ]) if $f2;
    my $fin = $uac->final_for($inv);
    my @runs = $t->runs('t4@127.0.0.1', call_id => $cid);
    is($runs[2] && $runs[2]{env}{SCRIPT_COOKIE}, $runs[1] && $runs[1]{env}{RESPONSE_TOKEN},
       'T4: the RESPONSE_TOKEN of run 2 came back (as the cookie) in run 3');
    is($fin && $fin->code, 486, 'T4: CGI-FORWARD-RESPONSE <token> sends the stored 486 upstream');
    is($fin && $fin->header('x-which'), 'loc1', 'T4: ... the response that token names');
    $uac->ack($inv, $fin) if $fin;
}

# ---- T5: staying in control, then letting go
{
    req_resp_script('t5', "    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'", '');
    my $uac = $t->peer(name => 'uac-t5');
    my $inv = $uac->invite(uri => $t->local_uri('t5'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    $t->wait_runs('t5@127.0.0.1', 2, call_id => $cid);
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'T5: the 486 gets the default action (forwarded)');
    $uac->ack($inv, $fin) if $fin;
    sleep 0.3;
    is(statuses($t->runs('t5@127.0.0.1', call_id => $cid)), 'INVITE 180',
       'T5: CGI-AGAIN yes -> the next message (180) runs the script; that run did not repeat it -> the 486 does not');
    is(codes($uac->all(call_id => $cid, response => 1)), '180 486', 'T5: caller got the 180 and the 486');
}

# ---- T6: cookie round trip
{
    req_resp_script('t6', "    printf 'CGI-SET-COOKIE khsihppii8asdl SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\nCGI-PROXY-REQUEST $u1 SIP/2.0\\n\\n'", '');
    my $uac = $t->peer(name => 'uac-t6');
    for my $round (1, 2) {
        my $inv = $uac->invite(uri => $t->local_uri('t6'));
        my $cid = $uac->call_id($inv);
        my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
        $uas1->reply($f, 486) if $f;
        my $fin = $uac->final_for($inv);
        $uac->ack($inv, $fin) if $fin;
        my @runs = $t->wait_runs('t6@127.0.0.1', 2, call_id => $cid);
        ok(@runs && !exists $runs[0]{env}{SCRIPT_COOKIE}, "T6: transaction $round: first run has no cookie");
        is($runs[1] && $runs[1]{env}{SCRIPT_COOKIE}, 'khsihppii8asdl', "T6: transaction $round: next run has SCRIPT_COOKIE=khsihppii8asdl");
    }
}

# ---- T7: request tokens for branch correlation
{
    req_resp_script('t7', "    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\nCGI-Request-Token: a\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\nCGI-Request-Token: b\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
                    "    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac-t7');
    my $inv = $uac->invite(uri => $t->local_uri('t7'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    ok($f1 && $f2, 'T7: two forked requests');
    ok($f1 && $f2 && !(grep { $_->[0] =~ /^cgi-/i } $f1->header_list, $f2->header_list),
       'T7: no CGI-Request-Token on the wire');
    $uas2->reply($f2, 180) if $f2;
    sleep 0.1;
    $uas1->reply($f1, 180) if $f1;
    sleep 0.1;
    $uas1->reply($f1, 486) if $f1;
    sleep 0.1;
    $uas2->reply($f2, 486) if $f2;
    my $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin) if $fin;
    my @runs = $t->wait_runs('t7@127.0.0.1', 5, call_id => $cid);
    my %peer_of = map { ($_->{env}{REQUEST_TOKEN} // '-') . ' ' . ($_->{env}{RESPONSE_STATUS} // '') => 1 } @runs[1 .. $#runs];
    is_deeply([ sort keys %peer_of ], [ 'a 180', 'a 486', 'b 180', 'b 486' ],
              'T7: responses of the first branch run the script with REQUEST_TOKEN=a, of the second with b');
    is(join(' ', map { $_->{env}{REQUEST_TOKEN} // '-' } @runs[1 .. $#runs]), 'b a a b', 'T7: ... in arrival order');
}

# ---- T8: sequential search (RFC 3050 §3.2)
{
    req_resp_script('t8',
        "    printf 'SIP/2.0 183 Searching\\n\\nCGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-SET-COOKIE loc1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
        "    if [ \"\$SCRIPT_COOKIE\" = loc1 ]; then\n"
      . "        printf 'CGI-PROXY-REQUEST $u2 SIP/2.0\\n\\nCGI-SET-COOKIE loc2 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'\n"
      . "    else\n"
      . "        printf 'SIP/2.0 480 Temporarily Unavailable\\nX-Searched: loc1 loc2 (%s)\\n\\n' \"\$SCRIPT_COOKIE\"\n"
      . "    fi");
    my $uac = $t->peer(name => 'uac-t8');
    my $inv_raw = $uac->invite(uri => $t->local_uri('t8'), content_type => 'application/sdp', body => $sdp);
    my $inv = parse_msg($inv_raw);
    my $cid = $inv->header('call-id');
    my $p = $uac->expect(call_id => $cid, code => 183);
    ok($p, 'T8 step 1: the provisional response goes upstream');
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    ok($f1, 'T8 step 1: the INVITE is proxied to location 1');
    ok(!$uas2->all(call_id => $cid), 'T8 step 1: not (yet) to location 2');
    $uas1->reply($f1, 486) if $f1;
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    ok($f2, 'T8 step 2: after location 1\'s 486 the INVITE goes to location 2');
    is($f2 && $f2->body, $sdp, 'T8 step 2: it is the initial INVITE (body)');
    is($f2 && $f2->header('cseq'), $inv->header('cseq'), 'T8 step 2: it is the initial INVITE (CSeq)');
    my $fin0 = $uac->expect(call_id => $cid, final => 1, timeout => 0.3);
    ok(!$fin0, 'T8 step 2: the 486 of location 1 is not sent to the caller');
    $uas2->reply($f2, 486) if $f2;
    my $fin = $uac->final_for($inv_raw);
    is($fin && $fin->code, 480, 'T8 step 3: the script\'s final response goes to the caller');
    is($fin && $fin->header('x-searched'), 'loc1 loc2 (loc2)', 'T8 step 3: run 3 saw the new cookie');
    $uac->ack($inv_raw, $fin) if $fin;
    my @runs = $t->runs('t8@127.0.0.1', call_id => $cid);
    is(join(' ', map { ($_->{env}{RESPONSE_STATUS} // $_->{env}{REQUEST_METHOD}) . '/' . ($_->{env}{SCRIPT_COOKIE} // '-') } @runs),
       'INVITE/- 486/loc1 486/loc2', 'T8: runs and cookies: INVITE (none), 486 (loc1), 486 (loc2)');
    # the transaction is over: a new one starts without a cookie
    my $inv2 = $uac->invite(uri => $t->local_uri('t8'));
    my $g = $uas1->expect(method => 'INVITE', call_id => $uac->call_id($inv2));
    my @r2 = $t->wait_runs('t8@127.0.0.1', 1, call_id => $uac->call_id($inv2));
    ok(@r2 && !exists $r2[0]{env}{SCRIPT_COOKIE}, 'T8: the cookie was discarded with the transaction');
    $uas1->reply($g, 486) if $g;
    my $g2 = $uas2->expect(method => 'INVITE', call_id => $uac->call_id($inv2));
    $uas2->reply($g2, 486) if $g2;
    my $fin2 = $uac->final_for($inv2);
    $uac->ack($inv2, $fin2) if $fin2;
}

# ---- T9: call forward no answer (Expires 2 instead of 20)
{
    my $desk = $uas1->uri('desk');
    my $vm = $uas2->uri('voicemail');
    req_resp_script('t9',
        "    printf 'CGI-PROXY-REQUEST $desk SIP/2.0\\nExpires: 2\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
        "    case \"\$RESPONSE_STATUS\" in\n"
      . "    408) printf 'CGI-PROXY-REQUEST $vm SIP/2.0\\n\\n' ;;\n"
      . "    1*)  printf 'CGI-AGAIN yes SIP/2.0\\n\\n' ;;\n"
      . "    esac");
    my $uac = $t->peer(name => 'uac-t9');
    my $t0 = time;
    my $inv = $uac->invite(uri => $t->local_uri('t9'), content_type => 'application/sdp', body => $sdp);
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 5);
    my $tc = time - $t0;
    ok($c && $tc > 1.7 && $tc < 3.5, sprintf('T9: after ~2 s the desk branch is CANCELled (%.2f s)', $tc));
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f, 487) }
    my $v = $uas2->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($v, 'T9: the initial INVITE goes to voicemail');
    is($v && $v->body, $sdp, 'T9: with its body');
    my @runs = $t->runs('t9@127.0.0.1', call_id => $cid);
    my ($r408) = grep { ($_->{env}{RESPONSE_STATUS} // '') eq '408' } @runs;
    ok($r408, 'T9: the script ran with RESPONSE_STATUS=408');
    is($r408 && $r408->{env}{REMOTE_ADDR}, '127.0.0.1', 'T9: ... and REMOTE_ADDR=127.0.0.1');
    $uas2->reply($v, 200, content_type => 'application/sdp', body => $sdp) if $v;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 200, 'T9: voicemail\'s 200 reaches the caller');
    $uac->ack($inv, $fin) if $fin;
    ok($uas2->expect(method => 'ACK', call_id => $cid, timeout => 3), 'T9: the caller\'s ACK reaches voicemail');
}

# ---- T10: combined actions in one run
{
    my $ncid = 't10-' . rand_token(8) . '@127.0.0.1';
    $t->cgi_script('t10@127.0.0.1',
        "printf 'SIP/2.0 180 Ringing\\nX-T10: provisional\\n\\n'\n"
      . "printf 'MESSAGE $u3 SIP/2.0\\nTo: <$u3>\\nFrom: <sip:t10\@127.0.0.1>;tag=t10\\nCall-ID: $ncid\\nCSeq: 1 MESSAGE\\nContent-Type: text/plain\\nContent-Length: 12\\n\\ncall for you'\n"
      . "printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\n'\n");
    my $uac = $t->peer(name => 'uac-t10');
    my $inv = $uac->invite(uri => $t->local_uri('t10'));
    my $cid = $uac->call_id($inv);
    my $p = $uac->expect(call_id => $cid, code => 180);
    is($p && $p->header('x-t10'), 'provisional', 'T10: the 1xx goes upstream');
    my $m = $uas3->expect(method => 'MESSAGE', call_id => $ncid);
    ok($m, 'T10: the new request is sent');
    is($m && $m->body, 'call for you', 'T10: ... with its body');
    $uas3->reply($m, 200) if $m;
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    ok($f1 && $f2, 'T10: two branches forked');
    $uas1->reply($f1, 486) if $f1;
    $uas2->reply($f2, 486) if $f2;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'T10: the call ends with the branches\' final response');
    $uac->ack($inv, $fin) if $fin;
}

# ---- T12: CANCEL
{
    req_resp_script('t12', "    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
        "    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'");
    # (REQUEST_METHOD=CANCEL takes the request branch of the script: it prints CGI-PROXY-REQUEST again)
    my $uac = $t->peer(name => 'uac-t12');
    my $inv = $uac->invite(uri => $t->local_uri('t12'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    $uac->expect(call_id => $cid, code => 180);
    $t->wait_runs('t12@127.0.0.1', 2, call_id => $cid);
    $uac->cancel($inv);
    my $c200 = $uac->expect(call_id => $cid, cseq_method => 'CANCEL', final => 1);
    is($c200 && $c200->code, 200, 'T12: the server answers the CANCEL with 200');
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'T12: the server CANCELs the outstanding branch itself');
    my @runs = $t->wait_runs('t12@127.0.0.1', 3, call_id => $cid);
    is($runs[2] && $runs[2]{env}{REQUEST_METHOD}, 'CANCEL', 'T12: the script is run for the CANCEL (advisory)');
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f, 487) }
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 487, 'T12: the caller gets 487');
    $uac->ack($inv, $fin) if $fin;
    is(scalar(my @i = $uas1->all(method => 'INVITE', call_id => $cid)), 1,
       'T12: the CGI-PROXY-REQUEST printed by the CANCEL run had no effect');
}

# ---- T13: ACK handling
{
    # (a) ACK for a forwarded 486
    req_resp_script('t13a', "    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
                    "    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac-t13');
    my $inv = $uac->invite(uri => $t->local_uri('t13a'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 486) if $f;
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'T13a: the proxy ACKs the downstream 486 itself');
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'T13a: the 486 is forwarded');
    $uac->ack($inv, $fin) if $fin;
    my @after = $uac->all(wait => 1.5, call_id => $cid, code => 486);
    my $tack = time - 1.5;
    ok(!(grep { $_->{rtime} > $tack + 0.1 } @after), 'T13a: the caller\'s ACK stops the retransmissions');
    is(statuses($t->runs('t13a@127.0.0.1', call_id => $cid)), 'INVITE 486', 'T13a: the ACK does not run the script');

    # (b) ACK for a downstream 200
    $inv = $uac->invite(uri => $t->local_uri('t13a'));
    $cid = $uac->call_id($inv);
    $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 200) if $f;
    $fin = $uac->final_for($inv);
    is($fin && $fin->code, 200, 'T13b: the 200 is forwarded');
    $uac->ack($inv, $fin) if $fin;
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'T13b: the caller\'s ACK is proxied downstream');
    sleep 0.3;
    is(statuses($t->runs('t13a@127.0.0.1', call_id => $cid)), 'INVITE 200', 'T13b: the ACK does not run the script');

    # (c) the script's own 200: its ACK runs the script, with the body
    $t->cgi_script('t13c@127.0.0.1', "if [ \"\$REQUEST_METHOD\" = INVITE ]; then printf 'SIP/2.0 200 OK\\nContact: <sip:t13c\@127.0.0.1:$port>\\n\\n'; fi");
    $inv = $uac->invite(uri => $t->local_uri('t13c'));
    $cid = $uac->call_id($inv);
    $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin, content_type => 'application/sdp', body => $sdp) if $fin;
    my @runs = $t->wait_runs('t13c@127.0.0.1', 2, call_id => $cid);
    is(statuses(@runs), 'INVITE ACK', 'T13c: the ACK for the script\'s 200 runs the script with REQUEST_METHOD=ACK');
    is($runs[1] && $runs[1]{stdin}, $sdp, 'T13c: ... with the ACK body on stdin');

    # (d) the script as UAC: the server does not ACK a 200 to its INVITE
    my $ncid = 't13d-' . rand_token(8) . '@127.0.0.1';
    req_resp_script('t13d',
        "    printf 'SIP/2.0 180 Ringing\\n\\nINVITE $u3 SIP/2.0\\nTo: <$u3>\\nFrom: <sip:t13d\@127.0.0.1>;tag=d1\\nCall-ID: $ncid\\nCSeq: 1 INVITE\\nContact: <sip:t13d\@127.0.0.1:$port>\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'",
        "    printf 'ACK $u3 SIP/2.0\\nTo: %s\\nFrom: %s\\nCall-ID: %s\\nCSeq: 1 ACK\\nX-By: script\\n\\nSIP/2.0 486 Busy Here\\n\\n' \"\$SIP_TO\" \"\$SIP_FROM\" \"\$SIP_CALL_ID\"");
    $inv = $uac->invite(uri => $t->local_uri('t13d'));
    my $i3 = $uas3->expect(method => 'INVITE', call_id => $ncid);
    ok($i3, 'T13d: the script\'s INVITE is sent');
    $uas3->reply($i3, 200) if $i3;
    $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin) if $fin;
    my @acks = $uas3->all(wait => 2, method => 'ACK', call_id => $ncid);
    ok(@acks && !(grep { ($_->header('x-by') // '') ne 'script' } @acks),
       'T13d: the 200 is not ACKed by the server; the ACK the script wrote is sent') or diag(join "\n--\n", map { $_->raw } @acks);
}

# ---- T14 (guidance): a script that adds no headers changes no end-to-end header
{
    $t->cgi_script('t14@127.0.0.1', "printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac-t14');
    my $inv_raw = $uac->invite(uri => $t->local_uri('t14'), content_type => 'application/sdp', body => $sdp,
        headers => [ 'Authorization' => 'Digest username="alice", realm="x", nonce="n", uri="sip:x", response="abc"',
                     'Subject' => 'signed', 'X-E2E' => 'one', 'Date' => 'Sat, 13 Nov 2010 23:29:00 GMT' ]);
    my $inv = parse_msg($inv_raw);
    my $f = $uas1->expect(method => 'INVITE', call_id => $inv->header('call-id'));
    my %hop = map { $_ => 1 } qw(via max-forwards record-route route content-length);
    my @a = map { lc($_->[0]) . ': ' . $_->[1] } grep { !$hop{ lc $_->[0] } } $inv->header_list;
    my @b = $f ? map { lc($_->[0]) . ': ' . $_->[1] } grep { !$hop{ lc $_->[0] } } $f->header_list : ();
    is($f && $f->header('authorization'), $inv->header('authorization'), 'T14: Authorization forwarded unchanged');
    is_deeply([ sort @b ], [ sort @a ], 'T14: with no script headers, the same end-to-end headers with the same values');
    my ($ia) = grep { $a[$_] =~ /^authorization:/ } 0 .. $#a;
    my @below = @a[ $ia + 1 .. $#a ];
    my %isbelow = map { $_ => 1 } @below;
    is_deeply([ grep { $isbelow{$_} } @b ], \@below, 'T14: the headers below Authorization keep their order');
    # the proxy edits the received text: nothing it need not touch moves
    is_deeply(\@b, \@a, 'T14: end-to-end headers forwarded in their original order')
        or diag("sent:\n" . join("\n", @a) . "\nforwarded:\n" . join("\n", @b));
    is($f && $f->body, $sdp, 'T14: body unchanged');
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv_raw);
    $uac->ack($inv_raw, $fin) if $fin;
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
