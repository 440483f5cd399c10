#!/usr/bin/perl
# RFC 3050 conformance: when the script runs again (§4, §5.3, §5.6.1.4-6,
# §5.7, §5.8): one script per transaction at a time, queued triggers in
# arrival order, CGI-AGAIN, cookies, request/response tokens, the default
# response handling, and the Expires timer with its local 408.
# Checklist items R1, R2, R15, R21-R24, R67-R69, R72-R74.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg);

my $t = SipCgiTest->new;
my $port = $t->sip_port;
my $uas1 = $t->peer(name => 'uas1');
my $uas2 = $t->peer(name => 'uas2');
my $u1 = $uas1->uri('one');
my $u2 = $uas2->uri('two');

# A script: on the request it prints $req (printf format), on responses it
# runs the shell code $resp.
sub script {
    my ($name, $req, $resp) = @_;
    $t->cgi_script("$name\@127.0.0.1", "if [ -n \"\$REQUEST_METHOD\" ]; then\n    printf '$req'\nelse\n    :\n$resp\nfi\n");
}

sub codes { join ' ', map { $_->code } grep { $_->code != 100 } @_ }
sub st { my ($runs) = @_; return join ' ', map { $_->{env}{RESPONSE_STATUS} // $_->{env}{REQUEST_METHOD} } @$runs }

# ---- R1, R2, R21, R22: serialized runs, arrival order, tokens
{
    script('serial', "CGI-PROXY-REQUEST $u1 SIP/2.0\\nCGI-Request-Token: b1\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n",
           "    sleep 0.4\n    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'\n");
    my $uac = $t->peer(name => 'uac-serial');
    my $inv = $uac->invite(uri => $t->local_uri('serial'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $t->wait_runs('serial@127.0.0.1', 1, call_id => $cid);
    # four responses in quick succession, in a known order
    $uas1->reply($f1, 180); sleep 0.03;
    $uas2->reply($f2, 183); sleep 0.03;
    $uas1->reply($f1, 486); sleep 0.03;
    $uas2->reply($f2, 480);
    my @runs = $t->wait_runs('serial@127.0.0.1', 5, call_id => $cid, timeout => 8);
    is(scalar(@runs), 5, 'R1: script ran for the INVITE and each of the 4 responses');
    my @overlap;
    for my $i (1 .. $#runs) {
        push @overlap, "run $i ended $runs[$i-1]{end}, run " . ($i + 1) . " started $runs[$i]{start}"
            unless defined $runs[$i - 1]{end} && $runs[$i]{start} > $runs[$i - 1]{end};
    }
    ok(@runs == 5 && !@overlap, 'R1: never two script processes at once in one transaction (each run starts after the previous ended)')
        or diag(join "\n", @overlap);
    is(st(\@runs), 'INVITE 180 183 486 480', 'R2: queued responses are handed to the script in arrival order');
    my @resp = @runs[1 .. $#runs];
    is(join(' ', map { $_->{env}{REQUEST_TOKEN} // '-' } @resp), 'b1 - b1 -',
       'R22: REQUEST_TOKEN=b1 on responses from branch b1, none from the branch without CGI-Request-Token');
    my %tok = map { ($_->{env}{RESPONSE_TOKEN} // '') => 1 } @resp;
    is(scalar(grep { length } keys %tok), 4, 'R21: four responses, four different RESPONSE_TOKENs');
    my $fin = $uac->final_for($inv, 5);
    ok($fin && ($fin->code == 486 || $fin->code == 480), 'R73: the caller gets a final 4xx when both branches are done')
        or diag($fin ? $fin->start_line : 'no final');
    $uac->ack($inv, $fin) if $fin;
    my @prov = $uac->all(call_id => $cid, filter => sub { $_[0]->is_response && $_[0]->code > 100 && $_[0]->code < 200 });
    is(codes(@prov), '180 183', 'R73: both provisional responses relayed (default action), in order');
}

# ---- R23, R24: cookies
{
    script('cookie', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-SET-COOKIE abc SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n",
           "    if [ \"\$RESPONSE_STATUS\" = 180 ]; then printf 'CGI-SET-COOKIE def SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'; fi\n");
    my $uac = $t->peer(name => 'uac-cookie');
    my ($inv, $cid, @runs);
    for my $round (1, 2) {
        $inv = $uac->invite(uri => $t->local_uri('cookie'), $round == 2 ? (call_id => $cid, cseq => 2) : ());
        $cid = $uac->call_id($inv);
        my $f = $uas1->expect(method => 'INVITE', call_id => $cid, filter => sub { $_[0]->header('cseq') =~ /^$round / });
        $uas1->reply($f, 180) if $f;
        sleep 0.2;
        $uas1->reply($f, 486) if $f;
        my $fin = $uac->final_for($inv);
        is($fin && $fin->code, 486, "R23: round $round: call completed (486)");
        $uac->ack($inv, $fin) if $fin;
        @runs = grep { $_->{env}{SIP_CSEQ} =~ /^$round / } $t->wait_runs('cookie@127.0.0.1', 3 * $round, call_id => $cid);
        is(scalar(@runs), 3, "R23: round $round: runs for INVITE, 180, 486");
        ok(@runs && !exists $runs[0]{env}{SCRIPT_COOKIE}, "R23/R24: round $round: the first run of a transaction has no SCRIPT_COOKIE");
        is($runs[1] && $runs[1]{env}{SCRIPT_COOKIE}, 'abc', "R23: round $round: next run has SCRIPT_COOKIE=abc");
        is($runs[2] && $runs[2]{env}{SCRIPT_COOKIE}, 'def', "R23: round $round: after CGI-SET-COOKIE def the following run has def");
    }
    # round 2 was a new transaction in the same dialog (same Call-ID, CSeq 2): R24 checked above
    my $uac2 = $t->peer(name => 'uac-cookie2');
    $inv = $uac2->invite(uri => $t->local_uri('cookie'));
    my $f = $uas1->expect(method => 'INVITE', call_id => $uac2->call_id($inv));
    $uas1->reply($f, 486) if $f;
    my $fin = $uac2->final_for($inv);
    $uac2->ack($inv, $fin) if $fin;
    @runs = $t->wait_runs('cookie@127.0.0.1', 2, call_id => $uac2->call_id($inv));
    ok(@runs && !exists $runs[0]{env}{SCRIPT_COOKIE}, 'R24: a new transaction (new Call-ID) has no cookie of another transaction');
    my %toks = map { ($_->{env}{RESPONSE_TOKEN} // '') => 1 } grep { $_->{env}{RESPONSE_STATUS} } $t->runs('cookie@127.0.0.1');
    is(scalar(grep { length } keys %toks), 5, 'R21: RESPONSE_TOKENs differ across transactions too (5 responses, 5 tokens)');
    is($runs[1] && $runs[1]{env}{SCRIPT_COOKIE}, 'abc', 'R24: ... and gets its own cookie');
}

# ---- R67: no CGI-AGAIN -> the script runs once, default handling
{
    script('noagain', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\n", "    printf 'SIP/2.0 500 Should Not Run\\n\\n'\n");
    my $uac = $t->peer(name => 'uac-noagain');
    my $inv = $uac->invite(uri => $t->local_uri('noagain'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    sleep 0.1;
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R67: without CGI-AGAIN the 486 is handled by default (forwarded)');
    $uac->ack($inv, $fin) if $fin;
    is(codes($uac->all(call_id => $cid, response => 1)), '180 486', 'R67: caller got 180 and 486');
    sleep 0.3;
    is($t->nruns('noagain@127.0.0.1', call_id => $cid), 1, 'R67: responses did not run the script');
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 2), 'R87: 486 ACKed by the server');
}

# ---- R68: CGI-AGAIN covers only the next run; queued responses of an unarmed script get the default
{
    script('again1', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n", "    sleep 0.5\n");
    my $uac = $t->peer(name => 'uac-again1');
    my $inv = $uac->invite(uri => $t->local_uri('again1'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $t->wait_runs('again1@127.0.0.1', 1, call_id => $cid);
    $uas1->reply($f, 180);
    sleep 0.15;     # run 2 (for the 180) is going now
    $uas1->reply($f, 183);
    sleep 0.03;
    $uas1->reply($f, 486);
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R68: final 486 forwarded by the default action');
    $uac->ack($inv, $fin) if $fin;
    is(codes($uac->all(call_id => $cid, response => 1)), '180 183 486',
       'R68: 180, then the 183 and 486 queued behind run 2, relayed in order');
    my @runs = $t->wait_runs('again1@127.0.0.1', 2, call_id => $cid);
    sleep 0.3;
    @runs = $t->runs('again1@127.0.0.1', call_id => $cid);
    is(st(\@runs), 'INVITE 180', 'R68 / T5: CGI-AGAIN yes on run 1, nothing on run 2 -> no run 3');
}

# ---- R69: CGI-AGAIN no
{
    script('againno', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN no SIP/2.0\\n\\n", '');
    my $uac = $t->peer(name => 'uac-againno');
    my $inv = $uac->invite(uri => $t->local_uri('againno'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R69: CGI-AGAIN no: 486 forwarded by the default action');
    $uac->ack($inv, $fin) if $fin;
    sleep 0.3;
    is($t->nruns('againno@127.0.0.1', call_id => $cid), 1, 'R69: CGI-AGAIN no -> no further runs');

    # 'no' after 'yes' in the same output takes the 'yes' back
    script('againyesno', "CGI-AGAIN yes SIP/2.0\\n\\nCGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN no SIP/2.0\\n\\n", '');
    $inv = $uac->invite(uri => $t->local_uri('againyesno'));
    $cid = $uac->call_id($inv);
    $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 486) if $f;
    $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R69: CGI-AGAIN yes then CGI-AGAIN no: 486 by the default action');
    $uac->ack($inv, $fin) if $fin;
    sleep 0.3;
    is($t->nruns('againyesno@127.0.0.1', call_id => $cid), 1, 'R69: a later CGI-AGAIN no in the same output takes back the yes');
}

# ---- R72: only CGI-SET-COOKIE -> default action, cookie stored
{
    script('cookieonly', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n",
           "    if [ \"\$RESPONSE_STATUS\" = 180 ]; then printf 'CGI-SET-COOKIE x42 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'; fi\n");
    my $uac = $t->peer(name => 'uac-cookieonly');
    my $inv = $uac->invite(uri => $t->local_uri('cookieonly'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180, headers => [ 'X-From-UAS' => '180' ]) if $f;
    my $p = $uac->expect(call_id => $cid, code => 180, timeout => 3);
    is($p && $p->header('x-from-uas'), '180', 'R72: run printing only CGI-SET-COOKIE: the 180 still gets the default action (relayed)');
    $uas1->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R72: call ends with the 486');
    $uac->ack($inv, $fin) if $fin;
    my @runs = $t->wait_runs('cookieonly@127.0.0.1', 3, call_id => $cid);
    is($runs[2] && $runs[2]{env}{SCRIPT_COOKIE}, 'x42', 'R72: ... and the cookie was stored');

    # on a request: only a cookie -> the server's default for a local Request-URI
    $t->cgi_script('cookiereq@127.0.0.1', "printf 'CGI-SET-COOKIE c1 SIP/2.0\\n\\n'");
    my $uac2 = $t->peer(name => 'uac-cookiereq');
    $inv = $uac2->invite(uri => $t->local_uri('cookiereq'));
    $fin = $uac2->final_for($inv);
    is($fin && $fin->code, 404, 'R72: INVITE, only CGI-SET-COOKIE -> default action: 404 (local URI, no registrar)');
    $uac2->ack($inv, $fin) if $fin;
    my $o = $uac2->request(method => 'OPTIONS', uri => $t->local_uri('cookiereq'));
    my $r = $uac2->expect(call_id => $uac2->call_id($o), final => 1);
    is($r && $r->code, 200, 'R72: OPTIONS, only CGI-SET-COOKIE -> default action: the server\'s 200');
    ok($r && defined $r->header('allow'), 'R72: ... with Allow (built-in answer)');
}

# ---- R73: the proxy's default response handling (script without CGI-AGAIN)
{
    # 100 absorbed, 180 relayed, 200 relayed, ACK for the 2xx goes end to end
    script('def1', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\n", '');
    my $uac = $t->peer(name => 'uac-def1');
    my $inv = $uac->invite(uri => $t->local_uri('def1'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 100, headers => [ 'X-From-UAS' => 'yes' ]) if $f;
    $uas1->reply($f, 180, headers => [ 'X-From-UAS' => 'yes' ]) if $f;
    $uas1->reply($f, 200, headers => [ 'X-From-UAS' => 'yes' ]) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 200, 'R73: a 2xx is forwarded');
    is($fin && $fin->header('x-from-uas'), 'yes', 'R73: ... it is the UAS\'s 200');
    my @all = $uac->all(call_id => $cid, response => 1);
    ok(!(grep { $_->code == 100 && $_->header('x-from-uas') } @all), 'R73: the UAS\'s 100 is not forwarded');
    ok((grep { $_->code == 180 && $_->header('x-from-uas') } @all), 'R73: the UAS\'s 180 is forwarded');
    $uac->ack($inv, $fin) if $fin;
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'R85: the ACK for the 200 is proxied to the UAS');
    is($t->nruns('def1@127.0.0.1', call_id => $cid), 1, 'R85: the ACK did not run the script');

    # 200 on one branch: forwarded, the other (ringing) branch CANCELled
    script('def2', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\n", '');
    $inv = $uac->invite(uri => $t->local_uri('def2'));
    $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 180) if $f1;
    sleep 0.1;
    $uas2->reply($f2, 200, headers => [ 'X-Which' => 'uas2' ]) if $f2;
    $fin = $uac->final_for($inv);
    is($fin && $fin->code, 200, 'R73: 200 on branch 2 forwarded');
    $uac->ack($inv, $fin) if $fin;
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'R73: the pending branch 1 gets a CANCEL after the 200');
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f1, 487) }
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'R73: its 487 is ACKed by the server');
    my @late = $uac->all(wait => 0.5, call_id => $cid, final => 1);
    ok(!(grep { $_->code == 487 } @late), 'R73: the 487 is not forwarded to the caller');

    # 486 then (0.8 s later) 480: nothing upstream until all branches are done
    script('def3', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\n", '');
    $inv = $uac->invite(uri => $t->local_uri('def3'));
    $cid = $uac->call_id($inv);
    $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 486) if $f1;
    my $a1 = $uas1->expect(method => 'ACK', call_id => $cid, timeout => 2);
    ok($a1, 'R73/R87: the 486 is ACKed at once by the server');
    my $early = $uac->expect(call_id => $cid, final => 1, timeout => 0.8);
    ok(!$early, 'R73: no final response upstream while branch 2 is pending');
    $uas2->reply($f2, 480) if $f2;
    $fin = $uac->final_for($inv);
    ok($fin && ($fin->code == 486 || $fin->code == 480), 'R73: best final response forwarded when all branches are done')
        or diag($fin ? $fin->start_line : 'none');
    $uac->ack($inv, $fin) if $fin;
    ok($uas2->expect(method => 'ACK', call_id => $cid, timeout => 2), 'R73/R87: the 480 is ACKed by the server');

    # 6xx: forwarded, other branches CANCELled
    script('def4', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\n", '');
    $inv = $uac->invite(uri => $t->local_uri('def4'));
    $cid = $uac->call_id($inv);
    $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 180) if $f1;
    sleep 0.1;
    $uas2->reply($f2, 603) if $f2;
    $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'R73: a 6xx CANCELs the other pending branches');
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f1, 487) }
    $fin = $uac->final_for($inv);
    is($fin && $fin->code, 603, 'R73: the 6xx is the final response (not the 487)');
    $uac->ack($inv, $fin) if $fin;

    # 503 -> 500
    script('def5', "CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\n", '');
    $inv = $uac->invite(uri => $t->local_uri('def5'));
    $cid = $uac->call_id($inv);
    $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 503) if $f1;
    $fin = $uac->final_for($inv);
    is($fin && $fin->code, 500, 'R73: a downstream 503 goes upstream as 500');
    $uac->ack($inv, $fin) if $fin;
}

# ---- R74, R15: Expires on CGI-PROXY-REQUEST -> local 408
{
    script('timer', "CGI-PROXY-REQUEST $u1 SIP/2.0\\nExpires: 2\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n",
           "    case \"\$RESPONSE_STATUS\" in\n"
         . "    408) printf 'SIP/2.0 480 Temporarily Unavailable\\nX-Timer: fired\\n\\n' ;;\n"
         . "    1*) printf 'CGI-AGAIN yes SIP/2.0\\n\\n' ;;\n"
         . "    esac\n");
    # (a) the UAS rings, then stays silent
    my $uac = $t->peer(name => 'uac-timer');
    my $t0 = time;
    my $inv = $uac->invite(uri => $t->local_uri('timer'));
    my $cid = $uac->call_id($inv);
    my $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    is($f && $f->header('expires'), '2', 'R74: the Expires header is sent on with the request');
    $uas1->reply($f, 180) if $f;
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 5);
    my $tc = time - $t0;
    ok($c && $tc >= 1.7 && $tc <= 3.5, sprintf('R74: the ringing branch is CANCELled when Expires runs out (%.2f s)', $tc));
    my @runs = $t->wait_runs('timer@127.0.0.1', 3, call_id => $cid);
    my ($r408) = grep { ($_->{env}{RESPONSE_STATUS} // '') eq '408' } @runs;
    ok($r408, 'R74: the script runs with RESPONSE_STATUS=408');
    is($r408 && $r408->{env}{RESPONSE_REASON}, 'Request Timeout', 'R74: RESPONSE_REASON=Request Timeout');
    is($r408 && $r408->{env}{REMOTE_ADDR}, '127.0.0.1', 'R15: REMOTE_ADDR=127.0.0.1 for the locally generated 408');
    like($r408 && $r408->{env}{RESPONSE_TOKEN} // '', qr/\S/, 'R74: the local 408 has a RESPONSE_TOKEN');
    ok(!($r408 && exists $r408->{env}{REQUEST_METHOD}), 'R74: the 408 run is a response run (no REQUEST_METHOD)');
    my $d = $r408 ? $r408->{start} - $t0 : -1;
    ok($d >= 1.7 && $d <= 3.5, sprintf('R74: the 408 run starts about 2 s after the INVITE (%.2f s)', $d));
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 480, 'R74: the 408 run\'s answer reaches the caller');
    is($fin && $fin->header('x-timer'), 'fired', 'R74: ... it is the script\'s 480');
    $uac->ack($inv, $fin) if $fin;
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f, 487) }
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'R74: the 487 of the cancelled branch is ACKed');
    sleep 0.3;
    is($t->nruns('timer@127.0.0.1', call_id => $cid), 3, 'R74: the 487 after the local 408 does not run the script');

    # (b) the UAS never answers: 408 still comes, no CANCEL (RFC 3261 §9.1)
    my $uas3 = $t->peer(name => 'uas3');
    script('timer2', 'CGI-PROXY-REQUEST ' . $uas3->uri('silent') . " SIP/2.0\\nExpires: 2\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n",
           "    printf 'SIP/2.0 480 Temporarily Unavailable\\nX-Status: %s\\n\\n' \"\$RESPONSE_STATUS\"\n");
    $t0 = time;
    $inv = $uac->invite(uri => $t->local_uri('timer2'));
    $cid = $uac->call_id($inv);
    ok($uas3->expect(method => 'INVITE', call_id => $cid), 'R74: silent UAS got the INVITE');
    $fin = $uac->final_for($inv, 6);
    my $tf = time - $t0;
    is($fin && $fin->header('x-status'), '408', 'R74: silent downstream: the script ran with RESPONSE_STATUS=408');
    ok($tf >= 1.7 && $tf <= 3.5, sprintf('R74: ... about 2 s after the INVITE (%.2f s)', $tf));
    $uac->ack($inv, $fin) if $fin;
    ok(!$uas3->all(wait => 0.5, method => 'CANCEL'), 'R74: no CANCEL to a branch that sent no provisional response (RFC 3261 §9.1)');

    # (c) not armed: the local 408 gets the default action
    script('timer3', "CGI-PROXY-REQUEST $u1 SIP/2.0\\nExpires: 1\\n\\n", '');
    $t0 = time;
    $inv = $uac->invite(uri => $t->local_uri('timer3'));
    $cid = $uac->call_id($inv);
    $f = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f, 180) if $f;
    $fin = $uac->final_for($inv, 5);
    is($fin && $fin->code, 408, 'R74: Expires without CGI-AGAIN: the caller gets the local 408 (default action)');
    $uac->ack($inv, $fin) if $fin;
    $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 2);
    ok($c, 'R74: ... and the branch is CANCELled');
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f, 487) }
    is($t->nruns('timer3@127.0.0.1', call_id => $cid), 1, 'R74: unarmed: the 408 did not run the script');
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
