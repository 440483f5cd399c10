#!/usr/bin/perl
# RFC 3050 conformance: parsing the script's output (§5.6 delimiting rules,
# §6.1 line ends) and the Status action (§5.6.1.1).  Checklist items
# R39-R52 (see docs/rfc3050-conformance.md).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg);

my $t = SipCgiTest->new;
my $port = $t->sip_port;

# name => printf format (the script's whole output)
my %out = (
    r40     => 'SIP/2.0 180 Ringing\nX-N: 1\n\nSIP/2.0 486 Busy Here\nX-N: 2\n\n',
    r41     => 'SIP/2.0 180 Ringing\nContent-Type: text/plain\nContent-Length: 5\n\nhelloSIP/2.0 486 Busy Here\n\n',
    r41b    => 'SIP/2.0 180 Ringing\nContent-Type: text/plain\nContent-Length: 5\n\nhello\n\n\nSIP/2.0 486 Busy Here\n\n',
    r41c    => 'SIP/2.0 180 Ringing\nContent-Type: text/plain\nContent-Length: 20\n\nx\n\nSIP/2.0 200 OK\n\n\nSIP/2.0 486 Busy Here\n\n',
    r42     => 'SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: 100\n\nshort',
    r43     => 'SIP/2.0 200 OK\nContent-Type: text/plain\n\nbody to eof\nSIP/2.0 486 Busy Here\n\n',
    r44     => 'SIP/2.0 200 OK\nContent-Length: 5\n\nhello',
    r45lf   => 'SIP/2.0 180 Ringing\nX-A: 1\nContent-Type: text/plain\nContent-Length: 5\n\nhelloSIP/2.0 486 Busy Here\nX-B: 2\n\n',
    r45crlf => 'SIP/2.0 180 Ringing\r\nX-A: 1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhelloSIP/2.0 486 Busy Here\r\nX-B: 2\r\n\r\n',
    r46     => 'SIP/2.0 486 Busy Here\nX-Long: first\n  continued\n\n',
    r47     => 'SIP/2.0 486 Busy Here\n\n',
    r50     => 'SIP/2.0 302 Moved Temporarily\nContact: <sip:elsewhere@192.0.2.5>\nX-Marker: r50\n\n',
    r50o    => 'SIP/2.0 202 Accepted\nX-Marker: r50o\nTo: <sip:someone-else@127.0.0.1>;tag=scripttag\nFrom: <sip:script-from@127.0.0.1>;tag=scriptfrom\nCall-ID: script-call-id@127.0.0.1\nCSeq: 4711 MESSAGE\n\n',
    r51     => 'Content-Type: text/plain\n\nhello',
    r52     => 'SIP/2.0 603 Decline\n\nSIP/2.0 200 OK\n\n',
    r52b    => 'SIP/2.0 200 OK\nX-N: first\n\nSIP/2.0 486 Busy Here\n\n',
    r52c    => 'SIP/2.0 180 Ringing\n\nSIP/2.0 183 Session Progress\n\nSIP/2.0 486 Busy Here\n\n',
);
for my $n (keys %out) {
    $t->cgi_script("$n\@127.0.0.1", "printf '$out{$n}'");
}

# Send a request from a fresh peer; returns (peer, raw, @responses up to the final).
sub ask {
    my ($user, %a) = @_;
    my $uac = $t->peer(name => "uac-$user");
    my $raw = $uac->request(method => $a{method} // 'INVITE', uri => $t->local_uri($user), %a);
    my $cid = $uac->call_id($raw);
    my @r;
    while (my $m = $uac->expect(call_id => $cid, response => 1, timeout => $a{timeout} // 5)) {
        push @r, $m;
        last if $m->is_final;
    }
    $uac->ack($raw, $r[-1]) if @r && $r[-1]->is_final && ($a{method} // 'INVITE') eq 'INVITE';
    return ($uac, $raw, @r);
}
sub codes { join ' ', map { $_->code } grep { $_->code != 100 } @_ }
sub nontrying { grep { $_->code != 100 } @_ }

# R40: no Content-Type: the message ends at the blank line
{
    my (undef, undef, @r) = ask('r40');
    my @c = nontrying(@r);
    is(codes(@r), '180 486', 'R40: two messages without Content-Type: 180 then 486');
    is($c[0] && $c[0]->header('x-n'), '1', 'R40: 180 carries its own header');
    is($c[1] && $c[1]->header('x-n'), '2', 'R40: the line after the blank line starts the next message (486 with X-N: 2)');
    is($c[0] && $c[0]->body, '', 'R40: 180 without Content-Type has no body');
}

# R41: Content-Type + Content-Length: exactly N octets
{
    my (undef, undef, @r) = ask('r41');
    my @c = nontrying(@r);
    is(codes(@r), '180 486', 'R41: body of exactly Content-Length octets, then an action line right after it');
    is($c[0] && $c[0]->body, 'hello', 'R41: 180 body is the 5 octets');
    is($c[0] && $c[0]->header('content-length'), '5', 'R41: 180 Content-Length 5');
    (undef, undef, @r) = ask('r41b');
    @c = nontrying(@r);
    is(codes(@r), '180 486', 'R41: blank lines between the body and the next action line are skipped');
    is($c[0] && $c[0]->body, 'hello', 'R41: body not extended by the blank lines');
    (undef, undef, @r) = ask('r41c');
    @c = nontrying(@r);
    is(codes(@r), '180 486', 'R41: a body holding a blank line and a status line is taken as body');
    is($c[0] && $c[0]->body, "x\n\nSIP/2.0 200 OK\n\n\n", 'R41: the 20 body octets are exact');
}

# R42: output ends inside the body
{
    my $mark = $t->log_mark;
    my (undef, undef, @r) = ask('r42', method => 'MESSAGE');
    is(@r && $r[-1]->code, 500, 'R42: output closed before Content-Length octets -> 500 upstream');
    ok(!(grep { $_->code == 200 } @r), 'R42: the truncated 200 is not sent');
    ok($t->wait_log($mark, qr/r42\@127\.0\.0\.1.*(?:body|malformed)/i), 'R42: logged');
}

# R43: Content-Type without Content-Length: body to EOF
{
    my (undef, undef, @r) = ask('r43', method => 'MESSAGE');
    my @c = nontrying(@r);
    is(codes(@r), '200', 'R43: Content-Type without Content-Length: one message, up to EOF');
    is($c[0] && $c[0]->body, "body to eof\nSIP/2.0 486 Busy Here\n\n", 'R43: body is everything up to EOF');
    is($c[0] && $c[0]->header('content-length'), length("body to eof\nSIP/2.0 486 Busy Here\n\n"),
       'R43: the server inserted the right Content-Length');
}

# R44: Content-Length without Content-Type
{
    my $mark = $t->log_mark;
    my (undef, undef, @r) = ask('r44', method => 'MESSAGE');
    is(@r && $r[-1]->code, 500, 'R44: Content-Length: 5 without Content-Type -> 500 upstream');
    ok($t->wait_log($mark, qr/r44\@127\.0\.0\.1.*Content-Type/i), 'R44: logged');
}

# R45: CRLF and LF output are the same
{
    my (undef, undef, @lf) = ask('r45lf');
    my (undef, undef, @crlf) = ask('r45crlf');
    my @a = nontrying(@lf);
    my @b = nontrying(@crlf);
    is(codes(@crlf), codes(@lf), 'R45: CRLF output gives the same responses as LF output (' . codes(@lf) . ')');
    is(codes(@crlf), '180 486', 'R45: CRLF output: 180 then 486');
    is($b[0] && $b[0]->body, 'hello', 'R45: CRLF output: body');
    is($b[0] && $b[0]->header('x-a'), '1', 'R45: CRLF output: header of message 1');
    is($b[1] && $b[1]->header('x-b'), '2', 'R45: CRLF output: header of message 2');
    is($b[0] && $b[0]->header('x-a'), $a[0] && $a[0]->header('x-a'), 'R45: same header value as with LF');
}

# R46: continuation line in script output
{
    my $mark = $t->log_mark;
    my (undef, undef, @r) = ask('r46');
    is(@r && $r[-1]->code, 500, 'R46: a continuation line in script output -> 500, not silently joined');
    ok(!(grep { $_->code == 486 } @r), 'R46: the 486 with the folded header is not sent');
    ok($t->wait_log($mark, qr/r46\@127\.0\.0\.1/), 'R46: logged');
}

# R47-R49: a bare status line
for my $tr (qw(udp tcp)) {
    my ($raw, @r);
    my $s;
    if ($tr eq 'udp') {
        my $uac;
        ($uac, $raw, @r) = ask('r47');
        $s = $uac->sock;
    } else {
        $s = $t->tcp_connect;
        $raw = $t->sip_request(method => 'INVITE', transport => 'TCP', sock => $s, uri => $t->local_uri('r47'));
        @r = $t->tcp_request($raw, 5, sock => $s);
        $t->send_raw($s, $t->ack_for($raw, $r[-1])) if @r;
    }
    my $fin = $r[-1];
    is($fin && $fin->code, 486, "R47: $tr: 'SIP/2.0 486 Busy Here' -> the caller gets 486");
    is($fin && $fin->reason, 'Busy Here', "R47: $tr: reason phrase from the script");
    my $req = parse_msg($raw);
    for my $h (qw(From Call-ID CSeq)) {
        is($fin && $fin->header($h), $req->header($h), "R48: $tr: $h copied from the request");
    }
    like($fin && $fin->header('to') // '', qr/^\Q${\ $req->header('to')}\E;tag=\S+$/, "R48: $tr: To copied from the request (tag added)");
    my @v = $fin ? $fin->header_elems('via') : ();
    is(scalar(@v), 1, "R49: $tr: the response has the request's single Via");
    my ($rv) = $req->header_elems('via');
    (my $sentby = $rv) =~ s/;.*//;
    my $vb = SipTest::Msg::params_of($v[0] // '')->{branch} // '';
    ok(index($v[0] // '', "$sentby;") == 0 && $vb eq $req->header_param('via', 'branch'),
       "R49: $tr: Via sent-by and branch are the request's") or diag($v[0] // 'no Via');
    $t->check_mirrored($raw, $fin, "R48/R49 $tr", src_port => $s->sockport) if $fin;
}

# R50: script headers go into the response; script To/From/Call-ID/CSeq win
{
    my (undef, $raw, @r) = ask('r50');
    my $fin = $r[-1];
    is($fin && $fin->code, 302, 'R50: 302 from the script');
    is($fin && $fin->header('contact'), '<sip:elsewhere@192.0.2.5>', 'R50: Contact written by the script is in the response');
    is($fin && $fin->header('x-marker'), 'r50', 'R50: extension header written by the script is in the response');
    is(scalar(my @c = $fin ? $fin->headers('contact') : ()), 1, 'R50: one Contact');

    my $uac = $t->peer(name => 'uac-r50o');
    $raw = $uac->request(method => 'MESSAGE', uri => $t->local_uri('r50o'));
    my $m = $uac->expect(filter => sub { ($_[0]->header('x-marker') // '') eq 'r50o' });
    is($m && $m->code, 202, 'R50: response with script-given To/From/Call-ID/CSeq sent');
    is($m && $m->header('to'), '<sip:someone-else@127.0.0.1>;tag=scripttag', 'R50: script To takes precedence');
    is($m && $m->header('from'), '<sip:script-from@127.0.0.1>;tag=scriptfrom', 'R50: script From takes precedence');
    is($m && $m->header('call-id'), 'script-call-id@127.0.0.1', 'R50: script Call-ID takes precedence');
    is($m && $m->header('cseq'), '4711 MESSAGE', 'R50: script CSeq takes precedence');
    for my $h (qw(to from call-id cseq)) {
        is(scalar(my @x = $m ? $m->headers($h) : ()), 1, "R50: only one $h header");
    }
}

# R51: no HTTP-CGI compatibility
{
    my (undef, undef, @r) = ask('r51', method => 'MESSAGE');
    is(@r && $r[-1]->code, 500, 'R51: output with Content-Type but no action line -> 500 (no HTTP-CGI compatibility mode)');
}

# R52: nothing after a final response
{
    my $mark = $t->log_mark;
    my ($uac, $raw, @r) = ask('r52');
    is(codes(@r), '603', 'R52: 603 then 200 in the output: the caller gets only the 603');
    my @late = $uac->all(wait => 1, call_id => $uac->call_id($raw), code => 200);
    ok(!@late, 'R52: no 200 follows the 603');
    ok($t->wait_log($mark, qr/r52\@127\.0\.0\.1.*after the final/), 'R52: the ignored response is logged');

    ($uac, $raw, @r) = ask('r52b', method => 'MESSAGE');
    is(codes(@r), '200', 'R52: 200 then 486: only the first final response (200) is sent');
    is($r[-1] && $r[-1]->header('x-n'), 'first', 'R52: it is the first one');
    @late = $uac->all(wait => 1, call_id => $uac->call_id($raw), code => 486);
    ok(!@late, 'R52: the 486 after the 200 is not sent');

    (undef, undef, @r) = ask('r52c');
    is(codes(@r), '180 183 486', 'R52: provisional responses before the final are all sent');
}

# R39: several messages in one output are all carried out
{
    my $uas1 = $t->peer(name => 'uas39a');
    my $uas2 = $t->peer(name => 'uas39b');
    $t->cgi_script('r39@127.0.0.1', "printf 'SIP/2.0 180 Ringing\\nX-From: script\\n\\n"
        . "CGI-PROXY-REQUEST " . $uas1->uri('a') . " SIP/2.0\\n\\n"
        . "CGI-PROXY-REQUEST " . $uas2->uri('b') . " SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac39');
    my $inv = $uac->invite(uri => $t->local_uri('r39'));
    my $p = $uac->expect(call_id => $uac->call_id($inv), code => 180);
    ok($p && ($p->header('x-from') // '') eq 'script', 'R39: the 180 written by the script reaches the caller');
    my $f1 = $uas1->expect(method => 'INVITE');
    my $f2 = $uas2->expect(method => 'INVITE');
    is($f1 && $f1->uri, $uas1->uri('a'), 'R39: first CGI-PROXY-REQUEST carried out');
    is($f2 && $f2->uri, $uas2->uri('b'), 'R39: second CGI-PROXY-REQUEST carried out (parallel fork)');
    $uas1->reply($f1, 486) if $f1;
    $uas2->reply($f2, 486) if $f2;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R39: the forked call ends with the branches\' 486');
    $uac->ack($inv, $fin) if $fin;
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
