#!/usr/bin/perl
# Hostile WebSocket clients against SipWebSocket On (RFC 6455, RFC 7118):
# bad opening handshakes are refused by httpd with 400 or 426; frame
# errors close the connection with 1002 (protocol error) or 1009 (too
# big); a frame that never ends is cut by SipTcpMessageTimeout.  After
# each, the engine is the same process and still answers OPTIONS over
# WebSocket and UDP.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token);
use SipWs;

my $t = SipTest->new(
    server_conf => <<'EOC',
LimitRequestFields 20
LimitRequestFieldSize 1000
SipLimitRequestBody 2000
SipTcpMessageTimeout 2
<Location /sip>
    SipWebSocket On
</Location>
<Location /sip-mine>
    SipWebSocket On
    Require expr "%{HTTP:Origin} == 'https://example.com'"
</Location>
EOC
);
my $hp = $t->http_port;
my $sp = $t->sip_port;
my $engine = $t->engine_pid;
ok($engine, 'engine running');
# the WebSocket message limit: the header and body limits of the vhost
my $limit = 8190 + 2 + 20 * 1002 + 2 + 2000;

sub options {
    my $r = $t->sip_request(method => 'OPTIONS', transport => 'WS', via_port => 0,
                            uri => "sip:127.0.0.1:$sp");
    $r =~ s{SIP/2\.0/WS 127\.0\.0\.1:0}{SIP/2.0/WS x.invalid};
    return $r;
}

sub still_alive {
    my ($label) = @_;
    is($t->engine_pid, $engine, "$label: engine pid unchanged");
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    my $ok = $ws && $ws->status == 101;
    if ($ok) {
        $ws->send_text(options());
        $ok = parse_msg($ws->recv_msg(3) // '')->code == 200;
        $ws->close(1000);
    }
    ok($ok, "$label: OPTIONS over WebSocket still answered");
    ok($t->options_ok('udp'), "$label: OPTIONS over UDP still answered");
}

# The server's close frame and end of stream: returns the close code.
sub closed_with {
    my ($ws) = @_;
    my $code;
    while (my ($op, $p) = $ws->recv_frame(3)) {
        if ($op == SipWs::CLOSE) { $code = length($p) >= 2 ? unpack('n', $p) : 0; last }
    }
    return ($code // -1, $ws->wait_eof(3));
}

# -- bad opening handshakes
my %bad = (
    'no Sec-WebSocket-Key'        => [400, key => ''],
    'a key that is not 16 bytes'  => [400, key => 'c2hvcnQ='],
    'Sec-WebSocket-Version 8'     => [426, version => 8],
    'no Sec-WebSocket-Version'    => [426, version => undef],
    'no "sip" subprotocol'        => [400, protocol => 'chat, sips'],
    'no subprotocol at all'       => [400, protocol => undef],
    'POST'                        => [400, method => 'POST', body => ''],
    'no Connection: Upgrade'      => [400, connection => 'keep-alive'],
    'HTTP/1.0'                    => [400, request => "GET /sip HTTP/1.0\r\nUpgrade: websocket\r\n"
                                          . "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                          . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                          . "Sec-WebSocket-Protocol: sip\r\n\r\n"],
);
for my $name (sort keys %bad) {
    my ($want, %o) = @{ $bad{$name} };
    my $ws = SipWs->connect(port => $hp, path => '/sip', %o);
    is($ws->status, $want, "handshake with $name: $want");
    if ($want == 426) {
        is($ws->header('sec-websocket-version'), '13', '426 names the version we speak');
    }
}
# httpd's access control applies to the upgrade (docs/websocket.md: Origin)
is(SipWs->connect(port => $hp, path => '/sip-mine', headers => [Origin => 'https://example.com'])
       ->status, 101, 'Require expr on Origin: our page upgraded');
is(SipWs->connect(port => $hp, path => '/sip-mine', headers => [Origin => 'https://evil.example'])
       ->status, 403, 'Require expr on Origin: another page refused 403');
still_alive('after bad handshakes');

# -- frame errors: 1002
my %proto = (
    'an unmasked client frame'          => sub { $_[0]->send_frame(SipWs::TEXT, options(), mask => 0) },
    'a reserved opcode (3)'             => sub { $_[0]->send_frame(3, 'x') },
    'a reserved control opcode (0xB)'   => sub { $_[0]->send_frame(0xB, 'x') },
    'an RSV bit'                        => sub { $_[0]->send_frame(SipWs::TEXT, options(), rsv => 4) },
    'a ping of 126 bytes'               => sub { $_[0]->send_frame(SipWs::PING, 'p' x 126) },
    'a fragmented ping'                 => sub { $_[0]->send_frame(SipWs::PING, 'p', fin => 0) },
    'a continuation out of the blue'    => sub { $_[0]->send_frame(SipWs::CONT, 'x') },
    'a new message inside a fragmented one' => sub {
        $_[0]->send_frame(SipWs::TEXT, 'OPTIONS', fin => 0);
        $_[0]->send_frame(SipWs::TEXT, 'x');
    },
    'a close with a one-byte body'      => sub { $_[0]->send_frame(SipWs::CLOSE, 'x') },
    'a 64-bit length with its top bit set' => sub {
        $_[0]->raw(pack('CC', 0x81, 0xFF) . pack('Q>', 1 << 63) . 'abcd');
    },
);
for my $name (sort keys %proto) {
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    is($ws->status, 101, "upgrade before $name");
    $proto{$name}->($ws);
    my ($code, $eof) = closed_with($ws);
    is($code, 1002, "$name: closed with 1002");
    ok($eof, "$name: connection closed");
}
still_alive('after protocol errors');

# -- size limits: 1009
{
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    $ws->raw(pack('CC', 0x81, 0xFF) . pack('Q>', 1 << 40) . 'abcd');
    my ($code, $eof) = closed_with($ws);
    is($code, 1009, 'a 64-bit length of 1 TB: 1009 before any payload');
    ok($eof, '... and closed');

    $ws = SipWs->connect(port => $hp, path => '/sip');
    $ws->send_frame(SipWs::TEXT, 'x' x ($limit + 1));
    ($code, $eof) = closed_with($ws);
    is($code, 1009, 'one frame just above the message limit: 1009');

    $ws = SipWs->connect(port => $hp, path => '/sip');
    $ws->send_frame(SipWs::TEXT, 'x' x 1000, fin => 0);
    for (1 .. int($limit / 1000) + 1) {
        last if $ws->eof;
        $ws->send_frame(SipWs::CONT, 'x' x 1000, fin => 0);
    }
    ($code, $eof) = closed_with($ws);
    is($code, 1009, 'fragments adding up above the message limit: 1009');
    ok($eof, '... and closed');

    # just within the limit is fine: an OPTIONS padded with a long header
    $ws = SipWs->connect(port => $hp, path => '/sip');
    my $big = options();
    $big =~ s/\r\n\r\n$/\r\nX-Pad: @{['p' x 900]}\r\n\r\n/;
    $ws->send_fragments($big, 7);
    is(parse_msg($ws->recv_msg(3) // '')->code, 200, 'a 1 KB message in 7 fragments is answered');
}
still_alive('after size limits');

# -- slow loris: half a frame, then nothing (SipTcpMessageTimeout 2)
{
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    my $f = SipWs->frame_bytes(SipWs::TEXT, options());
    $ws->raw(substr($f, 0, 20));
    my $t0 = time;
    ok($ws->wait_eof(6), 'a frame that never ends: closed');
    cmp_ok(time - $t0, '<', 5, '... by the message timeout');

    # one byte a second: the timeout runs from the start of the frame
    $ws = SipWs->connect(port => $hp, path => '/sip');
    $t0 = time;
    for my $i (0 .. length($f) - 1) {
        last if !$ws->raw(substr($f, $i, 1)) || $ws->wait_eof(0.5);
    }
    ok($ws->eof, 'a frame trickling in byte by byte: closed');
    cmp_ok(time - $t0, '<', 6, '... within the message timeout');

    # a fragmented message that never ends
    $ws = SipWs->connect(port => $hp, path => '/sip');
    $ws->send_frame(SipWs::TEXT, 'OPTIONS ', fin => 0);
    ok($ws->wait_eof(6), 'a fragmented message never finished: closed');
}
still_alive('after slow clients');

# -- a ping flood from a client that never reads: pongs stop being queued
#    once the unread output is large (the engine's memory stays bounded)
{
    my $rss = sub {
        open(my $fh, '<', "/proc/$engine/status") or return 0;
        local $/;
        my ($kb) = (<$fh> // '') =~ /^VmRSS:\s+(\d+)/m;
        return $kb // 0;
    };
    my $before = $rss->();
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    my $ping = SipWs->frame_bytes(SipWs::PING, 'p' x 125);
    my $sent = 0;
    $ws->socket->blocking(0);
    for (1 .. 300000) {
        my $n = syswrite($ws->socket, $ping);
        last unless defined $n && $n == length $ping;
        $sent++;
    }
    $ws->socket->blocking(1);
    sleep 1;
    my $grown = $rss->() - $before;
    cmp_ok($sent, '>', 20000, "many pings sent without reading ($sent)");
    cmp_ok($grown, '<', 8 * 1024, "engine memory grew by less than 8 MB ($grown KB)");
    close $ws->socket;
}
still_alive('after a ping flood');

# -- garbage after the upgrade
for my $n (1 .. 3) {
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    $ws->raw(join '', map { chr int rand 256 } 1 .. 4096);
    ok($ws->wait_eof(6), "random bytes after the upgrade ($n): closed");
}
still_alive('after random bytes');

# -- frames sent right behind the request, before our 101 (httpd read
#    them already: they are handed to the engine with the connection)
{
    my $req = "GET /sip HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            . "Sec-WebSocket-Protocol: sip\r\n\r\n";
    my $ws = SipWs->connect(port => $hp, request => $req . SipWs->frame_bytes(SipWs::TEXT, options()));
    is($ws->status, 101, 'upgrade with a frame right behind it');
    is(parse_msg($ws->recv_msg(3) // '')->code, 200, '... and that frame is answered');
    $ws = SipWs->connect(port => $hp, request => $req . SipWs->frame_bytes(SipWs::TEXT, 'y' x 2000));
    isnt($ws->status, 101, 'more than 1 KB sent before the answer: refused');
}
still_alive('at the end');

$t->stop;
done_testing;
