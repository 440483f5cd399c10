#!/usr/bin/perl
# RFC 3050 conformance: the CGI-FORWARD-RESPONSE action (§5.6.1.3):
# 'this', a token from an earlier run, header merge rules and CGI-Remove on
# responses, and the chosen behaviour for unknown tokens / 'this' on a
# request-triggered run.  Checklist items R64-R66.
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

sub only_caller_via {
    my ($m, $uac, $label) = @_;
    my @v = $m ? $m->header_elems('via') : ();
    ok(@v == 1 && $v[0] =~ /127\.0\.0\.1:${\ $uac->port};/, "$label: only the caller's Via (the server's removed)")
        or diag(join "\n", @v);
}

# ---- R64: 'this' forwards the triggering response at once
{
    $t->cgi_script('fthis@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
elif [ "\$RESPONSE_STATUS" = 486 ]; then
    printf 'CGI-FORWARD-RESPONSE this SIP/2.0\\n\\n'
else
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac64');
    my $inv = $uac->invite(uri => $t->local_uri('fthis'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $uas2->reply($f2, 180) if $f2;
    my $r180 = $uac->expect(call_id => $cid, code => 180);
    ok($r180, 'R64: (180 of branch 2 relayed by the default action)');
    my $sent486 = $f1 ? $uas1->reply($f1, 486, headers => [ 'X-Which' => 'uas1' ]) : undef;
    my $fin = $uac->final_for($inv, 3);
    is($fin && $fin->code, 486, 'R64: CGI-FORWARD-RESPONSE this: the 486 goes upstream while branch 2 still rings');
    is($fin && $fin->header('x-which'), 'uas1', 'R64: it is the 486 received from the UAS');
    is($fin && $fin->to_tag, $sent486 && $sent486->to_tag, 'R64: with the UAS\'s To tag');
    only_caller_via($fin, $uac, 'R64');
    $uac->ack($inv, $fin) if $fin;
    my $c = $uas2->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'R64: the other (ringing) branch is CANCELled after the final response went upstream');
    if ($c) { $uas2->reply($c, 200); $uas2->reply($f2, 487); }
    ok($uas2->expect(method => 'ACK', call_id => $cid, timeout => 3), 'R87: the 487 of the cancelled branch is ACKed by the server');
    ok($uas1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'R87: the forwarded 486 is ACKed by the server');
    my @more = $uac->all(wait => 0.5, call_id => $cid, final => 1);
    ok(!(grep { $_->code == 487 } @more), 'R64: the caller gets no second final response (487)');
}

# ---- R65: a token from an earlier run
{
    $t->cgi_script('ftok@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-PROXY-REQUEST $u2 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
elif [ "\$RESPONSE_STATUS" = 486 ]; then
    printf '%s' "\$RESPONSE_TOKEN" > \@VAR\@/ftok.token
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'CGI-FORWARD-RESPONSE %s SIP/2.0\\n\\n' "\$(cat \@VAR\@/ftok.token)"
fi
SH
    my $uac = $t->peer(name => 'uac65');
    my $inv = $uac->invite(uri => $t->local_uri('ftok'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 486, headers => [ 'X-Which' => 'uas1' ]) if $f1;
    # run 2 (486) must be over before the 415 comes, so that it is run 3
    $t->wait_runs('ftok@127.0.0.1', 2, call_id => $cid);
    ok(!$uac->all(call_id => $cid, final => 1), 'R65: no final response upstream while branch 2 is pending');
    # the proxy's own choice would be the 415 (a 4xx a client can act on)
    $uas2->reply($f2, 415, reason => 'Unsupported Media Type', headers => [ 'X-Which' => 'uas2' ]) if $f2;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R65: CGI-FORWARD-RESPONSE <token of run 2> on run 3 sends the earlier 486');
    is($fin && $fin->header('x-which'), 'uas1', 'R65: it is the response that token named');
    only_caller_via($fin, $uac, 'R65');
    $uac->ack($inv, $fin) if $fin;
    my @runs = $t->runs('ftok@127.0.0.1', call_id => $cid);
    is(scalar(@runs), 3, 'R65: three runs (INVITE, 486, 415)');
    is($runs[2] && $runs[2]{env}{RESPONSE_STATUS}, '415', 'R65: run 3 was for the 415');
}

# ---- R66: merge rules and CGI-Remove on a forwarded response
{
    $t->cgi_script('fmerge@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'CGI-FORWARD-RESPONSE this SIP/2.0\\nSubject: changed by script\\nX-Added: yes\\nCGI-Remove: X-Drop, Warning\\nCGI-Foo: bar\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac66');
    my $inv = $uac->invite(uri => $t->local_uri('fmerge'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 486, headers => [ 'Subject' => 'from uas', 'Subject' => 'second subject',
                                        'X-Drop' => 'drop me', 'Warning' => '399 uas "w"',
                                        'X-Keep' => 'kept' ]) if $f1;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R66: forwarded 486');
    is(join(' | ', $fin ? $fin->headers('subject') : ()), 'changed by script',
       'R66: script Subject replaces both Subject headers of the response');
    is($fin && $fin->header('x-added'), 'yes', 'R66: script header added to the response');
    ok($fin && !defined $fin->header('x-drop'), 'R66: CGI-Remove: X-Drop applies to the response');
    ok($fin && !defined $fin->header('warning'), 'R66: CGI-Remove: ..., Warning applies to the response');
    is($fin && $fin->header('x-keep'), 'kept', 'R66: other response headers kept');
    ok($fin && !(grep { $_->[0] =~ /^cgi-/i } $fin->header_list), 'R61/R66: no CGI-* header in the forwarded response');
    only_caller_via($fin, $uac, 'R66');
    $uac->ack($inv, $fin) if $fin;
}

# ---- R64: forwarding a response the server made up (local 408 of Expires)
{
    $t->cgi_script('flocal@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\nExpires: 1\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
elif [ "\$RESPONSE_STATUS" = 408 ]; then
    printf 'CGI-FORWARD-RESPONSE this SIP/2.0\\n\\n'
else
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac-local');
    my $inv = $uac->invite(uri => $t->local_uri('flocal'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 180) if $f1;
    my $c = $uas1->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    if ($c) { $uas1->reply($c, 200); $uas1->reply($f1, 487) }
    my $fin = $uac->final_for($inv, 4);
    is($fin && $fin->code, 408, 'R64: CGI-FORWARD-RESPONSE this on the local 408 sends a 408 upstream');
    is($fin && $fin->reason, 'Request Timeout', 'R64: ... with its reason phrase');
    only_caller_via($fin, $uac, 'R64 (local 408)');
    $uac->ack($inv, $fin) if $fin;
}

# ---- unknown token: logged, default action
{
    $t->cgi_script('funknown@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST $u1 SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'CGI-FORWARD-RESPONSE nosuchtoken SIP/2.0\\n\\n'
fi
SH
    my $mark = $t->log_mark;
    my $uac = $t->peer(name => 'uac-unk');
    my $inv = $uac->invite(uri => $t->local_uri('funknown'));
    my $cid = $uac->call_id($inv);
    my $f1 = $uas1->expect(method => 'INVITE', call_id => $cid);
    $uas1->reply($f1, 486, headers => [ 'X-Which' => 'uas1' ]) if $f1;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R65 (decision): unknown token -> default action (the 486 is forwarded)');
    is($fin && $fin->header('x-which'), 'uas1', 'R65 (decision): ... the UAS\'s 486');
    ok($t->wait_log($mark, qr/CGI-FORWARD-RESPONSE nosuchtoken.*no such response/), 'R65 (decision): unknown token logged');
    $uac->ack($inv, $fin) if $fin;
}

# ---- 'this' on a request-triggered run: logged, default action (404)
{
    $t->cgi_script('fthisreq@127.0.0.1', "printf 'CGI-FORWARD-RESPONSE this SIP/2.0\\n\\n'");
    my $mark = $t->log_mark;
    my $uac = $t->peer(name => 'uac-thisreq');
    my $inv = $uac->invite(uri => $t->local_uri('fthisreq'));
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 404, 'R64 (decision): \'this\' on a request-triggered run -> default action (404, no registrar)');
    ok($t->wait_log($mark, qr/CGI-FORWARD-RESPONSE this.*no such response/), 'R64 (decision): logged');
    $uac->ack($inv, $fin) if $fin;
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
