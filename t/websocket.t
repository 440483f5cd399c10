#!/usr/bin/perl
# SIP over WebSocket (RFC 7118) on an HTTP vhost: <Location /sip>
# SipWebSocket On on the main server's HTTP port.  The opening handshake
# (101, Sec-WebSocket-Accept, subprotocol sip), OPTIONS and REGISTER over
# ws://, a proxied call from the WebSocket client to a UDP UAS and back,
# responses on the same socket, ping/pong, the close handshake, a message
# in fragments, CRLF keep-alives, and the mod_status counters.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token);
use SipWs;

my $t = SipTest->new(
    server_conf => <<'EOC',
LoadModule status_module /usr/lib/apache2/modules/mod_status.so
SipProxyOutside On
<Location /sip>
    SipWebSocket On
</Location>
<Location /server-status>
    SetHandler server-status
</Location>
EOC
);
my $hp = $t->http_port;
my $sp = $t->sip_port;

# A request as a browser phone sends it: Via SIP/2.0/WS with a made-up
# .invalid host (RFC 7118 §5), no rport port.
sub ws_request {
    my (%a) = @_;
    my $host = delete $a{host} // rand_token(8) . '.invalid';
    my $r = $t->sip_request(transport => 'WS', via_port => 0, %a);
    $r =~ s{SIP/2\.0/WS 127\.0\.0\.1:0}{SIP/2.0/WS $host};
    return $r;
}

sub connect_ok {
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    return $ws && $ws->status == 101 ? $ws : undef;
}

# -- the opening handshake
my $ws = SipWs->connect(port => $hp, path => '/sip');
ok($ws, 'TCP connection to the HTTP port');
is($ws->status, 101, 'upgrade answered 101 Switching Protocols') or diag($ws->head);
is($ws->header('sec-websocket-accept'), $ws->expected_accept, 'Sec-WebSocket-Accept from our key');
is(lc($ws->header('upgrade') // ''), 'websocket', 'Upgrade: websocket');
like($ws->header('connection') // '', qr/upgrade/i, 'Connection: Upgrade');
is($ws->header('sec-websocket-protocol'), 'sip', 'subprotocol sip chosen (RFC 7118 §4.1)');

# -- OPTIONS: answered on the same socket, in one unmasked text frame
my $host = rand_token(8) . '.invalid';
$ws->send_text(ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp", host => $host));
my ($op, $payload, $fin, $masked) = $ws->recv_frame(3);
is($op, SipWs::TEXT, 'answer in a text frame');
ok($fin && !$masked, 'final and unmasked (RFC 6455 §5.1)');
my $m = parse_msg($payload // '');
is($m->code, 200, 'OPTIONS over WS answered 200');
my ($via) = $m->header_elems('via');
like($via // '', qr{^SIP/2\.0/WS \Q$host\E;}, 'the Via of the request comes back');
like($via // '', qr/;received=127\.0\.0\.1/, 'received added (the .invalid host is not the source)');
like($via // '', qr/;rport=\d+/, 'rport filled in');

# -- a message without Content-Length: the frame delimits it (RFC 7118 §5)
my $noclen = ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp");
$noclen =~ s/Content-Length: 0\r\n//;
$ws->send_text($noclen);
$m = parse_msg($ws->recv_msg(3) // '');
is($m->code, 200, 'a message without Content-Length is answered');

# -- REGISTER over WS; the binding keeps the ws transport
my $user = 'wsuser' . rand_token(4);
my $contact = "<sip:$user\@$host;transport=ws>";
$ws->send_text(ws_request(method => 'REGISTER', uri => "sip:127.0.0.1:$sp", host => $host,
                          to => "<sip:$user\@127.0.0.1>", from => "<sip:$user\@127.0.0.1>;tag=r1",
                          headers => [Contact => $contact, Expires => 300]));
$m = parse_msg($ws->recv_msg(3) // '');
is($m->code, 200, 'REGISTER over WS answered 200');
like(join(',', $m->headers('contact')), qr/\Q$user\E\@\Q$host\E;transport=ws/i,
     'the registered contact is listed with transport=ws');

# -- ping / pong, CRLF keep-alive
$ws->ping('are you there');
($op, $payload) = $ws->recv_frame(3);
is($op, SipWs::PONG, 'ping answered with pong');
is($payload, 'are you there', 'pong carries the ping data');
$ws->send_text("\r\n\r\n");
($op, $payload) = $ws->recv_frame(3);
is($payload, "\r\n", 'CRLFCRLF keep-alive in a message answered CRLF (RFC 5626 §4.4.1)');

# -- a message in fragments, with a ping in between (§5.4: control frames
#    may be injected between fragments)
my $frag = ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp");
$ws->send_fragments($frag, 4, interleave => [SipWs::PING, 'mid']);
my @ops;
my $answer;
for (1 .. 6) {
    my ($o, $p) = $ws->recv_frame(3);
    last unless defined $o;
    push @ops, $o;
    if ($o == SipWs::TEXT) { $answer = $p; last }
}
is(scalar(grep { $_ == SipWs::PONG } @ops), 3, 'each ping between fragments answered');
is(parse_msg($answer // '')->code, 200, 'the fragmented message was joined and answered');

# -- a message that is not UTF-8 goes out as binary, comes back as binary
my $bin = ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp",
                     from => "<sip:\xff\xfe\@127.0.0.1>;tag=b1");
$ws->send_binary($bin);
($op, $payload) = $ws->recv_frame(3);
is($op, SipWs::BINARY, 'an answer that is not valid UTF-8 goes in a binary frame');
is(parse_msg($payload // '')->code, 200, '... and is the 200');

# -- a proxied call: WS client -> mod_sip -> UDP UAS, and responses back
my $uas = IO::Socket::INET->new(LocalAddr => '127.0.0.1', Proto => 'udp') or die;
my $uport = $uas->sockport;
sub uas_recv {
    my ($to) = @_;
    return undef unless IO::Select->new($uas)->can_read($to // 3);
    my $peer = $uas->recv(my $buf, 65536);
    return (parse_msg($buf), $peer);
}
sub reply_to {
    my ($req, $code, $reason, $totag, $extra) = @_;
    my $r = "SIP/2.0 $code $reason\r\n";
    $r .= "Via: $_\r\n" for $req->headers('via');
    $r .= "Record-Route: $_\r\n" for $req->headers('record-route');
    $r .= "From: " . $req->header('from') . "\r\n";
    my $to = $req->header('to');
    $to .= ";tag=$totag" if $totag && $to !~ /;tag=/;
    $r .= "To: $to\r\nCall-ID: " . $req->header('call-id') . "\r\nCSeq: " . $req->header('cseq') . "\r\n";
    $r .= $extra // '';
    return $r . "Content-Length: 0\r\n\r\n";
}
my $cid = rand_token(12) . '@ws';
my $inv = ws_request(method => 'INVITE', uri => "sip:bob\@127.0.0.1:$uport", host => $host,
                     call_id => $cid, from => "<sip:$user\@127.0.0.1>;tag=c1",
                     headers => [Contact => "<sip:$user\@$host;transport=ws>"]);
$ws->send_text($inv);
my ($got, $peer) = uas_recv(3);
ok($got && $got->method eq 'INVITE', 'the UAS got the INVITE over UDP');
my @vias = $got ? $got->header_elems('via') : ();
is(scalar @vias, 2, 'two Vias: the proxy and the WS client');
like($vias[0] // '', qr{^SIP/2\.0/UDP 127\.0\.0\.1:}, 'top Via is the proxy on UDP');
like($vias[1] // '', qr{^SIP/2\.0/WS \Q$host\E;.*received=127\.0\.0\.1}, 'the WS Via below, stamped');
my @rr = $got ? $got->headers('record-route') : ();
my @rrv = map { split /\s*,\s*/ } @rr;
is(scalar @rrv, 2, 'the proxy record-routes once per side (RFC 5658: WS in, UDP out)')
    or diag($got ? $got->as_string : 'no INVITE');
like($rrv[1] // '', qr/;transport=ws[;>]/i, 'the WebSocket side has transport=ws');
unlike($rrv[0] // '', qr/transport=/i, 'the UDP side has no transport parameter');
if ($got) {
    $uas->send(reply_to($got, 180, 'Ringing', 'u1'), 0, $peer);
    $uas->send(reply_to($got, 200, 'OK', 'u1', "Contact: <sip:bob\@127.0.0.1:$uport>\r\n"), 0, $peer);
}
my @resp;
while (my $p = $ws->recv_msg(3)) {
    my $r = parse_msg($p);
    push @resp, $r;
    last if $r->code >= 200;
}
is(join(' ', map { $_->code } grep { $_->code != 100 } @resp), '180 200',
   '180 and 200 come back on the WebSocket');
my $ok200 = $resp[-1];
is(($ok200 ? $ok200->header('call-id') : '') // '', $cid, 'for our call');
my @rvia = $ok200 ? $ok200->header_elems('via') : ();
is(scalar @rvia, 1, 'the proxy removed its own Via');
# ACK and BYE along the route set (Record-Route reversed: RFC 3261 §12.1.2)
my @route = reverse map { split /\s*,\s*/ } ($ok200 ? $ok200->headers('record-route') : ());
my @rh = @route ? (Route => join(', ', @route)) : ();
$ws->send_text(ws_request(method => 'ACK', uri => "sip:bob\@127.0.0.1:$uport", host => $host,
                          call_id => $cid, from => "<sip:$user\@127.0.0.1>;tag=c1",
                          to => "<sip:bob\@127.0.0.1:$uport>;tag=u1", headers => [@rh]));
($got) = uas_recv(3);
is($got ? $got->method : '', 'ACK', 'the ACK reached the UAS');
$ws->send_text(ws_request(method => 'BYE', uri => "sip:bob\@127.0.0.1:$uport", host => $host,
                          call_id => $cid, from => "<sip:$user\@127.0.0.1>;tag=c1", cseq => 2,
                          to => "<sip:bob\@127.0.0.1:$uport>;tag=u1", headers => [@rh]));
($got, $peer) = uas_recv(3);
is($got ? $got->method : '', 'BYE', 'the BYE reached the UAS');
$uas->send(reply_to($got, 200, 'OK'), 0, $peer) if $got;
$m = parse_msg($ws->recv_msg(3) // '');
is($m->code, 200, 'the 200 for the BYE came back on the WebSocket');
like($m->header('cseq') // '', qr/^2 BYE/, '... for the BYE');

# -- two connections at once, each answered on its own
my $ws2 = connect_ok();
ok($ws2, 'a second WebSocket connection');
my $c1 = rand_token(10);
my $c2 = rand_token(10);
$ws->send_text(ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp", call_id => $c1));
$ws2->send_text(ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp", call_id => $c2));
is(parse_msg($ws2->recv_msg(3) // '')->header('call-id'), $c2, 'second socket: its own answer');
is(parse_msg($ws->recv_msg(3) // '')->header('call-id'), $c1, 'first socket: its own answer');

# -- mod_status
my $status = $t->http_get('/server-status?auto');
my %st = ($status // '') =~ /^(Sip\w+): (\d+)$/mg;
cmp_ok($st{SipWsConnectionsNow} // 0, '>=', 2, 'SipWsConnectionsNow counts the open ones');
cmp_ok($st{SipWsConnectionsTotal} // 0, '>=', 2, 'SipWsConnectionsTotal');
cmp_ok($st{SipWsMessagesIn} // 0, '>=', 10, 'SipWsMessagesIn');
cmp_ok($st{SipWsMessagesOut} // 0, '>=', 10, 'SipWsMessagesOut');
ok(exists $st{SipWssMessagesIn}, 'SipWssMessagesIn shown');

# -- the close handshake (§5.5.1): our close is echoed, then the server closes
$ws2->close(1000, 'bye');
($op, $payload) = $ws2->recv_frame(3);
is($op, SipWs::CLOSE, 'close answered with close');
is(unpack('n', $payload // "\0\0"), 1000, 'with our status code');
ok($ws2->wait_eof(3), 'then the server closes the TCP connection');
$ws->close();
($op, $payload) = $ws->recv_frame(3);
is($op, SipWs::CLOSE, 'a close without a code is answered too');
ok($ws->wait_eof(3), 'and the connection closed');
ok(wait_until_zero(), 'SipWsConnectionsNow back to 0');

sub wait_until_zero {
    return SipTest::wait_until(3, sub {
        my $s = $t->http_get('/server-status?auto') // '';
        return $s =~ /^SipWsConnectionsNow: 0$/m;
    });
}

# -- a path without SipWebSocket is not upgraded
my $other = SipWs->connect(port => $hp, path => '/elsewhere');
isnt($other->status, 101, 'no upgrade where SipWebSocket is not on');

ok($t->options_ok('udp'), 'UDP still answered');

# a graceful restart starts a new engine: the WebSocket connections it held
# close, and browsers reconnect
my $ws3 = connect_ok();
ok($ws3, 'a connection before the graceful restart');
my $old_engine = $t->engine_pid;
ok($t->apachectl('graceful'), 'graceful restart');
ok($ws3 && $ws3->wait_eof(10), 'the WebSocket connection is closed by it');
SipTest::wait_until(10, sub { ($t->engine_pid // 0) != $old_engine && $t->options_ok('udp') });
my $ws4 = connect_ok();
ok($ws4, 'a new connection after it');
if ($ws4) {
    $ws4->send_text(ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp"));
    is(parse_msg($ws4->recv_msg(3) // '')->code, 200, 'answered by the new engine');
}
$t->stop;
done_testing;
