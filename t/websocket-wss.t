#!/usr/bin/perl
# SIP over secure WebSocket (wss://, RFC 7118) on an HTTPS vhost of httpd
# (mod_ssl, a test certificate made here with openssl): mod_ssl decrypts,
# the upgrade handler relays the bytes to the engine through a socketpair
# (kind WSS).  OPTIONS, a proxied INVITE to a UDP UAS (Via SIP/2.0/WSS),
# ping, a protocol error closed with 1002, the close handshake, the
# SipWss* counters, and the worker thread given back when it ends.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use SipTest qw(parse_msg rand_token free_port);
use SipWs;
use Time::HiRes qw(sleep);

eval { require IO::Socket::SSL; 1 } or do {
    fail('IO::Socket::SSL (Debian libio-socket-ssl-perl) is installed');
    done_testing;
    exit 1;
};

my $wss_port = free_port();
my $t = SipTest->new(
    setup => sub {
        my ($t) = @_;
        my $d = $t->dir;
        system("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
               . "-keyout $d/key.pem -out $d/cert.pem 2>/dev/null") == 0
            or die "openssl failed\n";
    },
    server_conf => <<"EOC",
LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so
LoadModule status_module /usr/lib/apache2/modules/mod_status.so
LoadModule reqtimeout_module /usr/lib/apache2/modules/mod_reqtimeout.so
RequestReadTimeout header=20 body=2
SipProxyOutside On
Listen 127.0.0.1:$wss_port
<VirtualHost 127.0.0.1:$wss_port>
    ServerName 127.0.0.1
    SSLEngine on
    SSLCertificateFile \@DIR\@/cert.pem
    SSLCertificateKeyFile \@DIR\@/key.pem
    <Location /sip>
        SipWebSocket On
    </Location>
</VirtualHost>
<Location /server-status>
    SetHandler server-status
</Location>
EOC
);
my $sp = $t->sip_port;

sub wss { SipWs->connect(port => $wss_port, path => '/sip', tls => 1, @_) }

sub ws_request {
    my (%a) = @_;
    my $host = delete $a{host} // rand_token(8) . '.invalid';
    my $r = $t->sip_request(transport => 'WSS', via_port => 0, %a);
    $r =~ s{SIP/2\.0/WSS 127\.0\.0\.1:0}{SIP/2.0/WSS $host};
    return $r;
}

my $ws = wss();
ok($ws, 'TLS connection to the HTTPS vhost');
is($ws->status, 101, 'wss upgrade answered 101') or diag($ws->head);
is($ws->header('sec-websocket-accept'), $ws->expected_accept, 'Sec-WebSocket-Accept');
is($ws->header('sec-websocket-protocol'), 'sip', 'subprotocol sip');

my $host = rand_token(8) . '.invalid';
$ws->send_text(ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp", host => $host));
my $m = parse_msg($ws->recv_msg(5) // '');
is($m->code, 200, 'OPTIONS over wss answered 200');
my ($via) = $m->header_elems('via');
like($via // '', qr{^SIP/2\.0/WSS \Q$host\E;.*received=127\.0\.0\.1}, 'Via WSS, received stamped');

# a proxied INVITE to a UDP UAS: the client's Via says WSS
my $uas = IO::Socket::INET->new(LocalAddr => '127.0.0.1', Proto => 'udp') or die;
my $uport = $uas->sockport;
$ws->send_text(ws_request(method => 'INVITE', uri => "sip:bob\@127.0.0.1:$uport", host => $host,
                          headers => [Contact => "<sip:me\@$host;transport=wss>"]));
my $inv;
if (IO::Select->new($uas)->can_read(5)) {
    my $peer = $uas->recv(my $buf, 65536);
    $inv = parse_msg($buf);
    my $r = "SIP/2.0 486 Busy Here\r\n";
    $r .= "Via: $_\r\n" for $inv->headers('via');
    $r .= "From: " . $inv->header('from') . "\r\nTo: " . $inv->header('to') . ";tag=b\r\n"
        . "Call-ID: " . $inv->header('call-id') . "\r\nCSeq: " . $inv->header('cseq')
        . "\r\nContent-Length: 0\r\n\r\n";
    $uas->send($r, 0, $peer);
}
ok($inv, 'the INVITE reached the UDP UAS');
my @vias = $inv ? $inv->header_elems('via') : ();
like($vias[1] // '', qr{^SIP/2\.0/WSS \Q$host\E;}, 'its second Via is the wss client');
my $final;
while (my $p = $ws->recv_msg(5)) {
    $final = parse_msg($p);
    last if $final->code >= 200;
}
is($final ? $final->code : 0, 486, 'the 486 came back over wss');

# idle longer than RequestReadTimeout's body limit: the relay is no HTTP body
sleep 3;
$ws->send_text(ws_request(method => 'OPTIONS', uri => "sip:127.0.0.1:$sp", host => $host));
is(parse_msg($ws->recv_msg(5) // '')->code, 200,
   'still answered after 3 s idle (RequestReadTimeout body=2 does not apply)');

# ping through the relay
$ws->ping('tls');
my ($op, $payload) = $ws->recv_frame(5);
is($op, SipWs::PONG, 'pong over wss');
is($payload, 'tls', 'with the ping data');

my $status = $t->http_get('/server-status?auto');
my %st = ($status // '') =~ /^(Sip\w+): (\d+)$/mg;
cmp_ok($st{SipWssMessagesIn} // 0, '>=', 2, 'SipWssMessagesIn counts wss messages');
cmp_ok($st{SipWssMessagesOut} // 0, '>=', 2, 'SipWssMessagesOut');
cmp_ok($st{SipWsConnectionsNow} // 0, '>=', 1, 'the wss connection is open');

# the close handshake through the relay
$ws->close(1001);
($op, $payload) = $ws->recv_frame(5);
is($op, SipWs::CLOSE, 'close answered over wss');
is(unpack('n', $payload // "\0\0"), 1001, 'with our code');
ok($ws->wait_eof(5), 'and the TLS connection closed');

# a protocol error: 1002 through the relay
$ws = wss();
is($ws->status, 101, 'second wss upgrade');
$ws->send_frame(SipWs::TEXT, 'x', mask => 0);
($op, $payload) = $ws->recv_frame(5);
is($op, SipWs::CLOSE, 'unmasked frame over wss: close');
is(unpack('n', $payload // "\0\0"), 1002, 'with 1002');
ok($ws->wait_eof(5), 'connection closed');

# a bad handshake over TLS is refused by httpd as over plain HTTP
$ws = wss(version => 8);
is($ws->status, 426, 'version 8 over TLS: 426');

# the relaying worker threads are free again: the scoreboard's busy
# workers drop back (only this status request is busy)
ok(SipTest::wait_until(5, sub {
    my $s = $t->http_get('/server-status?auto') // '';
    my ($busy) = $s =~ /^BusyWorkers: (\d+)$/m;
    return defined $busy && $busy <= 1;
}), 'no worker thread held once the wss connections are closed');
ok($t->options_ok('udp'), 'UDP still answered');
$t->stop;
done_testing;
