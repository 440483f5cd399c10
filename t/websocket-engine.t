#!/usr/bin/perl
# WebSocket upgrades answered by the engine itself on a ProtocolSip vhost
# (SipWebSocket On at the vhost's level): a browser connects straight to
# the SIP port, the engine answers the HTTP/1.1 upgrade with 101 and the
# connection carries SIP over WebSocket; no httpd worker thread is held.
# Refusals: 426 for another version, 400 for a bad head or handshake,
# 404 on a vhost without SipWebSocket; SIP over plain TCP still works on
# the same port.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use SipTest qw(parse_msg rand_token free_port);
use SipWs;

my $plain_port = free_port();
my $t = SipTest->new(
    vhost_conf => "SipWebSocket On\nSipTcpMessageTimeout 2",
    server_conf => <<"EOC",
LoadModule status_module /usr/lib/apache2/modules/mod_status.so
Listen 127.0.0.1:$plain_port
<VirtualHost 127.0.0.1:$plain_port>
    ServerName 127.0.0.1
    ProtocolSip On
</VirtualHost>
<Location /server-status>
    SetHandler server-status
</Location>
EOC
);
my $sp = $t->sip_port;
my $engine = $t->engine_pid;

sub options {
    my (%a) = @_;
    my $r = $t->sip_request(method => 'OPTIONS', transport => 'WS', via_port => 0,
                            uri => "sip:127.0.0.1:$sp", %a);
    $r =~ s{SIP/2\.0/WS 127\.0\.0\.1:0}{SIP/2.0/WS e.invalid};
    return $r;
}

my $ws = SipWs->connect(port => $sp, path => '/');
is($ws->status, 101, 'the engine answers an upgrade on the SIP port with 101') or diag($ws->head);
is($ws->header('sec-websocket-accept'), $ws->expected_accept, 'Sec-WebSocket-Accept');
is($ws->header('sec-websocket-protocol'), 'sip', 'subprotocol sip');
$ws->send_text(options());
my ($op, $payload) = $ws->recv_frame(3);
is($op, SipWs::TEXT, 'answer in a text frame');
my $m = parse_msg($payload // '');
is($m->code, 200, 'OPTIONS over the engine-terminated WebSocket answered');
like(($m->header_elems('via'))[0] // '', qr{^SIP/2\.0/WS e\.invalid;.*received=}, 'WS Via stamped');
$ws->ping('x');
($op) = $ws->recv_frame(3);
is($op, SipWs::PONG, 'ping answered');

# frames right behind the upgrade request, in the same segment
my $req = "GET /any HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Protocol: sip\r\n\r\n";
my $ws2 = SipWs->connect(port => $sp, request => $req . SipWs->frame_bytes(SipWs::TEXT, options()));
is($ws2->status, 101, 'upgrade with a frame behind it');
is(parse_msg($ws2->recv_msg(3) // '')->code, 200, '... that frame answered');

# no worker thread is held by the open WebSocket connections
my $status = $t->http_get('/server-status?auto');
my ($busy) = $status =~ /^BusyWorkers: (\d+)$/m;
ok(defined $busy && $busy <= 1, 'two open WebSocket connections hold no worker thread')
    or diag($status);
my %st = $status =~ /^(Sip\w+): (\d+)$/mg;
cmp_ok($st{SipWsConnectionsNow} // 0, '>=', 2, 'counted as WebSocket connections');

$ws->close(1000);
($op) = $ws->recv_frame(3);
is($op, SipWs::CLOSE, 'close answered');
ok($ws->wait_eof(3), 'and closed');

# refusals
my $r = SipWs->connect(port => $sp, version => 8);
is($r->status, 426, 'version 8: 426 from the engine');
is($r->header('sec-websocket-version'), '13', 'with Sec-WebSocket-Version: 13');
ok($r->wait_eof(3), 'connection closed after the refusal');
$r = SipWs->connect(port => $sp, protocol => 'chat');
is($r->status, 400, 'no sip subprotocol: 400');
$r = SipWs->connect(port => $sp, request => "GET / HTTP/1.0\r\n\r\n");
is($r->status, 400, 'an HTTP/1.0 request: 400');
$r = SipWs->connect(port => $sp, request => "GET /" . ('a' x 9000) . " HTTP/1.1\r\n\r\n");
is($r->status, 400, 'a request head above 8 KB: 400');
$r = SipWs->connect(port => $plain_port);
is($r->status, 404, 'a ProtocolSip vhost without SipWebSocket: 404');

# a head that never ends: the message timeout
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $sp, Proto => 'tcp') or die;
print $s "GET / HTTP/1.1\r\nHost: x\r\n";
my $closed = SipTest::wait_until(6, sub {
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    return 0 unless select($rin, undef, undef, 0.1);
    return !sysread($s, my $buf, 4096);
});
ok($closed, 'an unfinished request head is closed by SipTcpMessageTimeout');

# SIP over plain TCP on the same port is untouched
ok($t->options_ok('tcp'), 'SIP over TCP on the same port still answered');
is($t->engine_pid, $engine, 'engine pid unchanged');
$t->stop;
done_testing;
