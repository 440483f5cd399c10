#!/usr/bin/perl
# RFC 3050 conformance: the script's input (§5.4, §5.5, §6.1, §7.3, §7.4).
# Metavariables for request and response triggers, SIP_* header variables,
# stdin, argv, working directory, user.  Checklist items R4-R26, R30-R34,
# R37, R38, R89, R90 (see docs/rfc3050-conformance.md).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use Cwd ();
use SipCgiTest qw(parse_msg rand_token);

my $TOKEN = qr/[A-Za-z0-9\-.!%*_+`'~]+/;
my $sdp = "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

my $t = SipCgiTest->new;
my $port = $t->sip_port;
my $sdir = Cwd::abs_path($t->scripts_dir);

# Request-triggered runs answer with a response; the run records itself.
$t->cgi_script('env@127.0.0.1', <<'SH');
for f in @DIR@/conf/httpd.conf @SCRIPTS@/env@127.0.0.1 @SCRIPTS@; do
    if [ -w "$f" ]; then echo "$f"; fi
done > "$R/writable"
case "$REQUEST_METHOD" in
INVITE) printf 'SIP/2.0 486 Busy Here\n\n' ;;
*)      printf 'SIP/2.0 200 OK\n\n' ;;
esac
SH
# R38: reads exactly CONTENT_LENGTH bytes and never waits for EOF
$t->write_script('exact@127.0.0.1', text => "#!/bin/sh\n"
    . "body=\$(dd bs=1 count=\"\$CONTENT_LENGTH\" 2>/dev/null)\n"
    . "printf 'SIP/2.0 200 OK\\nContent-Type: text/plain\\n\\n%s' \"\$body\"\n");

# Checks that hold on every run (request or response trigger).
sub common_env {
    my ($label, $e) = @_;
    is($e->{GATEWAY_INTERFACE}, 'SIP-CGI/1.1', "R9: $label: GATEWAY_INTERFACE=SIP-CGI/1.1");
    is($e->{SERVER_PROTOCOL}, 'SIP/2.0', "R10: $label: SERVER_PROTOCOL=SIP/2.0");
    like($e->{SERVER_NAME} // '', qr/^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])$/,
         "R11: $label: SERVER_NAME is a hostname or an IP literal");
    is($e->{SERVER_NAME}, '127.0.0.1', "R11: $label: SERVER_NAME is the vhost's ServerName 127.0.0.1");
    is($e->{SERVER_PORT}, $port, "R12: $label: SERVER_PORT is the port the message arrived on");
    ok(defined $e->{SERVER_SOFTWARE} && length $e->{SERVER_SOFTWARE}, "R13: $label: SERVER_SOFTWARE present");
    is($e->{REMOTE_ADDR}, '127.0.0.1', "R14: $label: REMOTE_ADDR is the sender's address");
    my @empty = grep { $e->{$_} eq '' } sort keys %$e;
    ok(!@empty, "R7: $label: no metavariable is present with an empty value") or diag("empty: @empty");
    my %lc;
    my @dup = grep { $lc{ lc $_ }++ } sort keys %$e;
    ok(!@dup, "R8: $label: no two variable names differ only in case") or diag("dups: @dup");
    ok(!exists $e->{REMOTE_HOST}, "R16: $label: no REMOTE_HOST without HostnameLookups");
    ok(!exists $e->{SCRIPT_COOKIE}, "R23: $label: no SCRIPT_COOKIE without CGI-SET-COOKIE");
    ok(!exists $e->{AUTH_TYPE} && !exists $e->{REMOTE_USER}, "R7: $label: no AUTH_TYPE/REMOTE_USER (no authentication)");
}

sub request_env {
    my ($label, $e) = @_;
    common_env($label, $e);
    ok(!exists $e->{$_}, "R7/R17: $label: $_ absent on a request trigger")
        for qw(RESPONSE_STATUS RESPONSE_REASON RESPONSE_TOKEN REQUEST_TOKEN);
}

sub one_run {
    my ($name, $raw) = @_;
    my $cid = parse_msg($raw)->header('call-id');
    my @r = $t->wait_runs($name, 1, call_id => $cid);
    return $r[0] || { env => {}, stdin => undef };
}

# ---- 1: MESSAGE over UDP with a body and many kinds of headers
{
    my $uac = $t->peer(name => 'uac1');
    my $uri = "sip:%65nv\@127.0.0.1:$port;user=ip;x=Y";
    my $raw = $t->sip_request(method => 'MESSAGE', uri => $uri, sock => $uac->sock,
        content_type => 'application/sdp', body => $sdp,
        headers => [ 'X-Case' => 'upper', 'x-case' => 'lower',
                     'Subject' => "first line\r\n\tsecond  line",
                     'Authorization' => 'Basic dXNlcjpzM2NyM3Q=',
                     'Proxy-Authorization' => 'Digest username="pu", realm="r", nonce="n", uri="sip:x", response="5ecret"',
                     'X-Extension-Header' => 'ext value',
                     'Organization' => 'Org A', 'Organization' => 'Org B' ]);
    my $req = parse_msg($raw);
    my ($via1) = $req->headers('via');
    my $via2 = 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKearlierhop';
    $raw =~ s/^(Via: [^\r\n]*\r\n)/$1Via: $via2\r\n/m;
    $uac->send($raw);
    my $resp = $uac->expect(call_id => $req->header('call-id'), final => 1);
    is($resp && $resp->code, 200, 'MESSAGE with body answered by the script');
    my $run = one_run('env@127.0.0.1', $raw);
    my $e = $run->{env};
    request_env('UDP MESSAGE', $e);
    ok(scalar(keys %$e) > 10, 'R5: metavariables are passed as environment variables');
    like($e->{SERVER_SOFTWARE} // '', qr{^$TOKEN(?:/$TOKEN)?(?:[ \t]+$TOKEN(?:/$TOKEN)?)*$},
         'R13: SERVER_SOFTWARE matches 1*product (product = token ["/" product-version], no comments)')
        or diag('SERVER_SOFTWARE=' . ($e->{SERVER_SOFTWARE} // 'undef'));
    is($run->{argc}, '0', 'R4: the script gets no command-line arguments');
    is($run->{cwd}, $sdir, 'R6: working directory is the directory holding the script (SipDirectory)');
    is($e->{REQUEST_METHOD}, 'MESSAGE', 'R17: REQUEST_METHOD=MESSAGE (extension method)');
    is($e->{REQUEST_URI}, $uri, 'R18: REQUEST_URI equals the Request-URI byte for byte (escapes, parameters)');
    is($e->{SIP_CALL_ID}, $req->header('call-id'), 'R30: Call-ID -> SIP_CALL_ID');
    is($e->{SIP_MAX_FORWARDS}, '70', 'R30: Max-Forwards: 70 -> SIP_MAX_FORWARDS=70');
    is($e->{SIP_CSEQ}, '1 MESSAGE', 'R30: CSeq -> SIP_CSEQ');
    is($e->{SIP_X_EXTENSION_HEADER}, 'ext value', 'R33: an unknown extension header is exported (SIP_X_EXTENSION_HEADER)');
    my @via = split /,\s*/, $e->{SIP_VIA} // '';
    is(scalar(@via), 2, 'R31: two Via header lines give one SIP_VIA with two values') or diag("SIP_VIA=" . ($e->{SIP_VIA} // 'undef'));
    like($via[0] // '', qr/^\Q$via1\E(?:;|$)/, 'R31: SIP_VIA: first value is the first Via line (topmost first)');
    is($via[1], $via2, 'R31: SIP_VIA: second value is the second Via line');
    is($e->{SIP_ORGANIZATION}, 'Org A, Org B', 'R31: repeated Organization lines joined with ", " in order');
    like($e->{SIP_X_CASE} // '', qr/^upper, lower$/, 'R8: X-Case and x-case are one header: one SIP_X_CASE, values joined');
    like($e->{SIP_SUBJECT} // '', qr/^first line[ \t]+second  line$/, 'R32: folded Subject is unfolded into one line');
    unlike($e->{SIP_SUBJECT} // "\n", qr/[\r\n]/, 'R32: no CR/LF in the unfolded value');
    ok(!exists $e->{SIP_AUTHORIZATION}, 'R33: Authorization is not exported (no SIP_AUTHORIZATION)');
    ok(!exists $e->{SIP_PROXY_AUTHORIZATION}, 'R33: Proxy-Authorization is not exported');
    ok(!(grep { /dXNlcjpzM2NyM3Q=|s3cr3t|5ecret/ } values %$e),
       'R89: no credentials (Basic user:password, Digest response) anywhere in the environment');
    is($e->{CONTENT_LENGTH}, length($sdp), 'R25: CONTENT_LENGTH is the body size');
    is($e->{CONTENT_TYPE}, 'application/sdp', 'R26: CONTENT_TYPE is the media type of the body');
    is($e->{SIP_CONTENT_LENGTH}, length($sdp), 'R34: SIP_CONTENT_LENGTH exported (header present)');
    is($e->{SIP_CONTENT_TYPE}, 'application/sdp', 'R34: SIP_CONTENT_TYPE exported (header present)');
    is($run->{stdin}, $sdp, 'R37: stdin holds exactly the body (no start line, no headers)');
    if ($> == 0) {
        is($run->{user}, 'www-data', 'R90: started as root, the script runs as the httpd User (www-data)');
        isnt($run->{uid}, '0', 'R90: the script does not run as root');
    } else {
        is($run->{uid}, $>, 'R90: the script runs as the (non-root) httpd user');
    }
    is(SipCgiTest::_slurp("$run->{dir}/writable") // 'unreadable', '',
       'R90: the script cannot write the httpd config, the script or SipDirectory');
}

# ---- 2: INVITE without a body (486 from the script, ACKed)
{
    my $uac = $t->peer(name => 'uac2');
    my $uri = $t->local_uri('env');
    my $raw = $uac->invite(uri => $uri);
    my $fin = $uac->final_for($raw);
    is($fin && $fin->code, 486, 'INVITE answered 486 by the script');
    $uac->ack($raw, $fin) if $fin;
    my $e = one_run('env@127.0.0.1', $raw)->{env};
    request_env('UDP INVITE', $e);
    is($e->{REQUEST_METHOD}, 'INVITE', 'R17: REQUEST_METHOD=INVITE');
    is($e->{REQUEST_URI}, $uri, 'R18: REQUEST_URI present with REQUEST_METHOD, equal to the Request-URI');
    ok(!exists $e->{CONTENT_LENGTH}, 'R25: no body -> no CONTENT_LENGTH');
    ok(!exists $e->{CONTENT_TYPE}, 'R26: no body -> no CONTENT_TYPE');
    ok(!exists $e->{SIP_CONTENT_TYPE}, 'R34: no Content-Type header -> no SIP_CONTENT_TYPE');
    is($e->{SIP_CONTENT_LENGTH}, '0', 'R34: Content-Length: 0 header -> SIP_CONTENT_LENGTH=0');
}

# ---- 3: UDP request with a body and no Content-Length header
{
    my $uac = $t->peer(name => 'uac3');
    my $body = "hello without length\r\n";
    my $raw = $t->sip_request(method => 'MESSAGE', uri => $t->local_uri('env'), sock => $uac->sock,
                              content_type => 'text/plain;charset=utf-8', body => $body,
                              omit => ['Content-Length']);
    $uac->send($raw);
    my $resp = $uac->expect(call_id => $uac->call_id($raw), final => 1);
    is($resp && $resp->code, 200, 'UDP MESSAGE without Content-Length answered');
    my $run = one_run('env@127.0.0.1', $raw);
    my $e = $run->{env};
    is($e->{CONTENT_LENGTH}, length($body), 'R25: body without Content-Length header: CONTENT_LENGTH = body size');
    ok(!exists $e->{SIP_CONTENT_LENGTH}, 'R34: no Content-Length header -> no SIP_CONTENT_LENGTH (CONTENT_LENGTH still set)');
    is($e->{CONTENT_TYPE}, 'text/plain;charset=utf-8', 'R26: CONTENT_TYPE with parameters');
    is($run->{stdin}, $body, 'R37: stdin is the body (UDP, no Content-Length)');
}

# ---- 4: compact header forms, binary body
{
    my $uac = $t->peer(name => 'uac4');
    my $bin = join '', map { chr } 0 .. 255;
    my $raw = $t->sip_request(method => 'MESSAGE', uri => $t->local_uri('env'), sock => $uac->sock,
                              compact => 1, content_type => 'application/octet-stream', body => $bin,
                              headers => [ 'Subject' => 'compact subject' ]);
    my $req = parse_msg($raw);
    $uac->send($raw);
    my $resp = $uac->expect(call_id => $req->header('call-id'), final => 1);
    is($resp && $resp->code, 200, 'compact-form MESSAGE answered');
    my $run = one_run('env@127.0.0.1', $raw);
    my $e = $run->{env};
    is($e->{SIP_FROM}, $req->header('from'), 'R30: f: -> SIP_FROM (compact forms expanded)');
    is($e->{SIP_CALL_ID}, $req->header('call-id'), 'R30: i: -> SIP_CALL_ID');
    is($e->{SIP_SUBJECT}, 'compact subject', 'R30: s: -> SIP_SUBJECT');
    is($e->{SIP_CONTENT_TYPE}, 'application/octet-stream', 'R34: c: -> SIP_CONTENT_TYPE');
    is($e->{SIP_CONTENT_LENGTH}, 256, 'R34: l: -> SIP_CONTENT_LENGTH');
    ok(!(grep { /^SIP_[A-Z]$/ } keys %$e), 'R30: no one-letter SIP_x variables');
    is($e->{CONTENT_LENGTH}, 256, 'R25: CONTENT_LENGTH of a binary body');
    ok(defined $run->{stdin} && $run->{stdin} eq $bin, 'R37: binary body (with NUL bytes) intact on stdin');
}

# ---- 5: TCP
{
    my $s = $t->tcp_connect;
    my $raw = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $s, uri => $t->local_uri('env'));
    my @r = $t->tcp_request($raw, 5, sock => $s);
    is(@r && $r[-1]->code, 200, 'OPTIONS over TCP answered by the script');
    my $e = one_run('env@127.0.0.1', $raw)->{env};
    request_env('TCP OPTIONS', $e);
    like($e->{SIP_VIA} // '', qr{^SIP/2\.0/TCP }, 'SIP_VIA of a TCP request');
}

# ---- 6: R38, a script that reads exactly CONTENT_LENGTH bytes
{
    my $uac = $t->peer(name => 'uac6');
    my $raw = $uac->request(method => 'MESSAGE', uri => $t->local_uri('exact'),
                            content_type => 'text/plain', body => 'exactly this');
    my $resp = $uac->expect(call_id => $uac->call_id($raw), final => 1);
    is($resp && $resp->body, 'exactly this',
       'R37/R38: a script reading only CONTENT_LENGTH bytes (not waiting for EOF) gets the whole body');
}

# ---- 7: response triggers
my $uas = $t->peer(name => 'uas7');
$t->cgi_script('envp@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST %s SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n' '${\ $uas->uri('bob')}'
elif [ "\$RESPONSE_STATUS" = 180 ]; then
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
{
    my $uac = $t->peer(name => 'uac7');
    my $inv = $uac->invite(uri => $t->local_uri('envp'), content_type => 'application/sdp', body => $sdp);
    my $fwd = $uas->expect(method => 'INVITE');
    ok($fwd, 'proxied INVITE reached the UAS');
    if ($fwd) {
        $uas->reply($fwd, 180);
        sleep 0.3;
        $uas->reply($fwd, 486, headers => [ 'X-Resp' => 'from uas', 'X-Resp' => 'again' ],
                    content_type => 'text/plain', body => 'busy body');
    }
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'the 486 reached the caller (default action)');
    $uac->ack($inv, $fin) if $fin;
    my @runs = $t->wait_runs('envp@127.0.0.1', 3, call_id => $uac->call_id($inv));
    is(scalar(@runs), 3, 'script ran for the INVITE, the 180 and the 486');
    my ($e1, $e2, $e3) = map { $_->{env} } @runs;
    $e2 //= {}; $e3 //= {};
    common_env('180 trigger', $e2);
    common_env('486 trigger', $e3);
    for my $p ([ '180', $e2 ], [ '486', $e3 ]) {
        my ($c, $e) = @$p;
        ok(!exists $e->{REQUEST_METHOD}, "R17: $c trigger: no REQUEST_METHOD for a response");
        ok(!exists $e->{REQUEST_URI}, "R18: $c trigger: no REQUEST_URI for a response");
        is($e->{RESPONSE_STATUS}, $c, "R19: $c trigger: RESPONSE_STATUS=$c");
        like($e->{RESPONSE_TOKEN} // '', qr/^$TOKEN$/, "R21: $c trigger: RESPONSE_TOKEN is a token");
        ok(!exists $e->{REQUEST_TOKEN}, "R22: $c trigger: branch without CGI-Request-Token -> no REQUEST_TOKEN");
        is($e->{SIP_CSEQ}, '1 INVITE', "R17: $c trigger: the method is in SIP_CSEQ");
    }
    is($e2->{RESPONSE_REASON}, 'Ringing', 'R20: RESPONSE_REASON=Ringing');
    is($e3->{RESPONSE_REASON}, 'Busy Here', 'R20: RESPONSE_REASON=Busy Here');
    isnt($e2->{RESPONSE_TOKEN} // 'x', $e3->{RESPONSE_TOKEN} // 'x', 'R21: two responses get different RESPONSE_TOKENs');
    ok(!exists $e2->{CONTENT_LENGTH}, 'R25: response without body -> no CONTENT_LENGTH');
    is($e3->{CONTENT_LENGTH}, length('busy body'), 'R25: response body -> CONTENT_LENGTH');
    is($e3->{CONTENT_TYPE}, 'text/plain', 'R26: response body -> CONTENT_TYPE');
    is($runs[2] && $runs[2]{stdin}, 'busy body', 'R37: the response body is on stdin');
    is($e3->{SIP_X_RESP}, 'from uas, again', 'R30/R31: response headers exported as SIP_*, repeated ones joined');
    my @v = split /,\s*/, $e3->{SIP_VIA} // '';
    is(scalar(@v), 2, 'R31: response SIP_VIA holds both Vias of the response as received');
    like($e3->{SIP_TO} // '', qr/;tag=/, 'R30: SIP_TO of the response carries the UAS To tag');
}
$t->dump_log_on_failure;
$t->stop;

# ---- 8: HostnameLookups On -> REMOTE_HOST
my $t2 = SipCgiTest->new(vhost_conf => 'HostnameLookups On');
$port = $t2->sip_port;
{
    my $uas2 = $t2->peer(name => 'uas8');
    $t2->cgi_script('host@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST %s SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n' '${\ $uas2->uri('bob')}'
fi
SH
    my $uac = $t2->peer(name => 'uac8');
    my $inv = $uac->invite(uri => $t2->local_uri('host'));
    my $fwd = $uas2->expect(method => 'INVITE');
    $uas2->reply($fwd, 486) if $fwd;
    my $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin) if $fin;
    my @runs = $t2->wait_runs('host@127.0.0.1', 2, call_id => $uac->call_id($inv));
    is($runs[0] && $runs[0]{env}{REMOTE_HOST}, 'localhost', 'R16: HostnameLookups On: REMOTE_HOST=localhost for a request from 127.0.0.1');
    is($runs[1] && $runs[1]{env}{REMOTE_HOST}, 'localhost', 'R16: HostnameLookups On: REMOTE_HOST=localhost for a response from 127.0.0.1');
    ok($runs[1] && !exists $runs[1]{env}{REMOTE_HOST} || ($runs[1] && ($runs[1]{env}{REMOTE_HOST} // '') eq 'localhost'),
       'R16/R7: response run: REMOTE_HOST is either the right name or absent (never empty or wrong)');
}
$t2->dump_log_on_failure;
$t2->stop;

# ---- 9: R14 for response runs: the address the response came from, which
# is not the one the branch was sent to (a UAS answering from another
# address of its host, or a NAT); 127.0.0.2 is another loopback address
my $t3 = SipCgiTest->new;
{
    my $uas = $t3->peer(name => 'uas9');
    my $other = $t3->peer(name => 'uas9b', addr => '127.0.0.2');
    $t3->cgi_script('raddr@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST %s SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n' '${\ $uas->uri('bob')}'
else
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
    my $uac = $t3->peer(name => 'uac9');
    my $inv = $uac->invite(uri => $t3->local_uri('raddr'));
    my $fwd = $uas->expect(method => 'INVITE');
    ok($fwd, 'R14: the INVITE was proxied to the UAS at 127.0.0.1');
    $other->reply($fwd, 180) if $fwd;
    $other->reply($fwd, 486) if $fwd;
    my $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin) if $fin;
    is($fin && $fin->code, 486, 'R14: the 486 sent from 127.0.0.2 reached the caller');
    my @runs = $t3->wait_runs('raddr@127.0.0.1', 3, call_id => $uac->call_id($inv));
    is($runs[0] && $runs[0]{env}{REMOTE_ADDR}, '127.0.0.1', 'R14: request run: REMOTE_ADDR=127.0.0.1 (the caller)');
    is($runs[1] && $runs[1]{env}{RESPONSE_STATUS}, '180', '(the second run is for the 180)');
    is($runs[1] && $runs[1]{env}{REMOTE_ADDR}, '127.0.0.2',
       'R14: response run: REMOTE_ADDR=127.0.0.2, where the 180 came from, not 127.0.0.1 where the branch went');
    is($runs[2] && $runs[2]{env}{REMOTE_ADDR}, '127.0.0.2', 'R14: response run for the 486: REMOTE_ADDR=127.0.0.2');
}
$t3->dump_log_on_failure;
$t3->stop;
done_testing;
