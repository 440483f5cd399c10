#!/usr/bin/perl
# RFC 3581 (received, rport) and RFC 3261 §18.2.2 on every transport, with
# a UA behind a pretend NAT: its Via sent-by is a made-up private address
# (10.0.0.1:5060;rport) while it sends from its real loopback port.
#   - UDP, TCP, TLS, WS: the answer reaches the UA (over UDP at its source
#     port, not 10.0.0.1:5060; on streams on its connection) and its Via
#     shows received=127.0.0.1 and rport=<its source port>;
#   - UDP without rport: received is added and the answer goes to
#     received at the sent-by port; a sent-by equal to the source gets no
#     received;
#   - a request the proxy relays to a registered user: the callee sees the
#     UA's Via with received/rport, and its answer reaches the UA's source
#     port;
#   - the same over TCP and TLS when the UA's connection has closed before
#     the answer: a new connection to received and the sent-by port
#     (§18.2.2; TLS: the server's certificate chain is checked);
#   - a request naming a received of its own has it replaced with the
#     source address.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Socket::IP;
use IO::Select;
use Socket qw(AF_INET6);
use SipTest qw(parse_msg rand_token free_port wait_until response_to accept_on);
use SipRegTest;
use SipTls;
use SipWs;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

my $tport = free_port();
my $port6 = free_port();
my $pki;
my $t = SipRegTest->new(
    start => 0,
    setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
# the server's own TLS connections (§18.2.2 below) trust the test CA
$t->{server_conf} = SipTls::modules_conf()
    . SipTls::vhost_conf($pki, $tport, "SSLProxyEngine on\nSSLProxyCACertificateFile $pki->{ca}\n"
                         . "SSLProxyVerify require")
    . "Listen [::1]:$port6\n<VirtualHost [::1]:$port6>\n    ServerName localhost6\n    ProtocolSip On\n"
    . "</VirtualHost>\n"
    . "<Location /sip>\n    SipWebSocket On\n</Location>\n";
$t->start;
my $port = $t->sip_port;

sub nat_via {
    my ($tr, %o) = @_;
    return "SIP/2.0/$tr " . ($o{sent_by} // '10.0.0.1:5060') . ';branch=z9hG4bK' . rand_token(12)
        . ($o{rport} // 1 ? ';rport' : '') . ($o{extra} // '');
}
sub top_via { my $m = shift; return $m ? ($m->header_elems('via'))[0] // '' : '' }
sub options { $t->sip_request(method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$_[0]", @_[1 .. $#_]) }

# ---- UDP
{
    my $u = $t->udp_socket;
    my $up = $u->sockport;
    my @r = $t->udp_req(options($port, via => nat_via('UDP')), 3, sock => $u);
    my $r = $r[-1];
    is($r && $r->code, 200, 'UDP: the answer reaches the source port, not the sent-by');
    like(top_via($r), qr/^SIP\/2\.0\/UDP 10\.0\.0\.1:5060;/, 'UDP: the sent-by is kept');
    like(top_via($r), qr/;received=127\.0\.0\.1(?:;|$)/, 'UDP: received=127.0.0.1');
    like(top_via($r), qr/;rport=$up(?:;|$)/, "UDP: rport=$up (the source port)");

    # no rport: received at the sent-by port (§18.2.2)
    my $u2 = $t->udp_socket;
    my $p2 = $u2->sockport;
    $t->udp_send(options($port, via => nat_via('UDP', sent_by => "10.0.0.1:$p2", rport => 0)), sock => $u);
    my $d = $t->udp_recv($u2, 3);
    my $m = $d && parse_msg($d);
    is($m && $m->code, 200, 'UDP without rport: the answer goes to received at the sent-by port');
    like(top_via($m), qr/;received=127\.0\.0\.1(?:;|$)/, 'UDP without rport: received added');
    unlike(top_via($m), qr/rport/, 'UDP without rport: no rport added');
    ok(!defined $t->udp_recv($u, 0.3), 'UDP without rport: nothing to the source port');

    # sent-by = the source, no rport: nothing to add (RFC 3261 §18.2.1)
    @r = $t->udp_req(options($port, via => nat_via('UDP', sent_by => "127.0.0.1:$up", rport => 0)), 3, sock => $u);
    unlike(top_via($r[-1]), qr/received|rport/, 'UDP: a sent-by equal to the source gets neither');

    # a received of the client's own is replaced
    @r = $t->udp_req(options($port, via => nat_via('UDP', extra => ';received=192.0.2.9')), 3, sock => $u);
    like(top_via($r[-1]), qr/;received=127\.0\.0\.1(?:;|$)/, 'UDP: a received sent by the client is replaced');
    unlike(top_via($r[-1]), qr/192\.0\.2\.9/, 'UDP: ... and not kept');
}

# ---- UDP over IPv6: received is the bare address (RFC 3261 §20.42)
SKIP: {
    my $u6 = IO::Socket::IP->new(LocalHost => '::1', Proto => 'udp', Family => AF_INET6);
    skip 'no IPv6 loopback', 3 unless $u6;
    my $dst = IO::Socket::IP->new(PeerHost => '::1', PeerPort => $port6, Proto => 'udp')->peername;
    send($u6, options($port6, via => nat_via('UDP')) =~ s/127\.0\.0\.1:$port6/[::1]:$port6/r, 0, $dst);
    my $d;
    recv($u6, $d, 65536, 0) if IO::Select->new($u6)->can_read(3);
    my $r = $d && parse_msg($d);
    is($r && $r->code, 200, 'UDP over IPv6: the answer reaches the source port');
    like(top_via($r), qr/;received=::1(?:;|$)/, 'UDP over IPv6: received=::1');
    like(top_via($r), qr/;rport=${\ $u6->sockport}(?:;|$)/, 'UDP over IPv6: rport is the source port');
}

# ---- TCP and TLS
for my $tr (qw(TCP TLS)) {
    my $dport = $tr eq 'TLS' ? $tport : $port;
    my $c = $tr eq 'TLS' ? SipTls::tls_connect($tport, $pki) : $t->tcp_connect;
    ok($c, "$tr: connected") or next;
    my $cp = $c->sockport;
    $t->send_raw($c, options($dport, transport => $tr, via => nat_via($tr)));
    my $r = $t->read_response($c, 3);
    is($r && $r->code, 200, "$tr: the answer comes back on the connection");
    like(top_via($r), qr/^SIP\/2\.0\/$tr 10\.0\.0\.1:5060;/, "$tr: the sent-by is kept");
    like(top_via($r), qr/;received=127\.0\.0\.1(?:;|$)/, "$tr: received=127.0.0.1");
    like(top_via($r), qr/;rport=$cp(?:;|$)/, "$tr: rport=$cp (the connection's source port)");
    close $c;
}

# ---- WebSocket
{
    my $ws = SipWs->connect(port => $t->http_port, path => '/sip');
    ok($ws && $ws->status == 101, 'WS: connected');
    my $cp = $ws->socket->sockport;
    $ws->send_text(options($port, transport => 'WS', via => nat_via('WS')));
    my $d = $ws->recv_msg(3);
    my $r = $d && parse_msg($d);
    is($r && $r->code, 200, 'WS: the answer comes back on the WebSocket');
    like(top_via($r), qr/;received=127\.0\.0\.1(?:;|$)/, 'WS: received=127.0.0.1');
    like(top_via($r), qr/;rport=$cp(?:;|$)/, "WS: rport=$cp (the connection's source port)");
    $ws->close(1000);
}

# ---- relayed by the proxy to a registered user
my $b = $t->udp_socket;
my $bp = $b->sockport;
my $reg = $t->register(user => 'bob', contacts => ["<sip:bob\@127.0.0.1:$bp>"], expires => 600);
is($reg && $reg->code, 200, 'bob registers over UDP');

{
    my $u = $t->udp_socket;
    my $up = $u->sockport;
    $t->udp_send($t->sip_request(method => 'MESSAGE', uri => $t->aor('bob'), via => nat_via('UDP'),
                                 body => 'hi', content_type => 'text/plain'), sock => $u);
    my $d = $t->udp_new_request($b, 3, 'MESSAGE');
    my $m = $d && parse_msg($d);
    ok($m, 'proxied (UDP): bob gets the MESSAGE');
    my @v = $m ? $m->header_elems('via') : ();
    is(scalar @v, 2, 'proxied (UDP): two Vias (ours, the UA\'s)');
    like($v[1] // '', qr/^SIP\/2\.0\/UDP 10\.0\.0\.1:5060;.*received=127\.0\.0\.1/,
         'proxied (UDP): the UA\'s Via carries received');
    like($v[1] // '', qr/;rport=$up(?:;|$)/, 'proxied (UDP): ... and rport');
    $t->udp_send(response_to($m, 200, 'OK', tag => 'b1'), sock => $b, port => $port) if $m;
    my $rd = $t->udp_recv($u, 3);
    my $r = $rd && parse_msg($rd);
    is($r && $r->code, 200, 'proxied (UDP): bob\'s 200 reaches the UA at received:rport');
    is($r && scalar($r->header_elems('via')), 1, 'proxied (UDP): with our Via removed');
}

# ---- over TCP and TLS, the UA's connection closed before the answer:
# §18.2.2, a new connection to received at the sent-by port
for my $tr (qw(TCP TLS)) {
    my $l = $tr eq 'TLS'
        ? IO::Socket::SSL->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1,
                               SSL_server => 1, SSL_cert_file => $pki->{server},
                               SSL_key_file => $pki->{server_key})
        : IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5,
                                Proto => 'tcp', ReuseAddr => 1);
    $l or die "listen: $!";
    my $lp = $l->sockport;
    my $c = $tr eq 'TLS' ? SipTls::tls_connect($tport, $pki) : $t->tcp_connect;
    my $cid = rand_token(12) . '@rport';
    $t->send_raw($c, $t->sip_request(method => 'MESSAGE', transport => $tr,
                                     uri => $t->aor('bob'),
                                     call_id => $cid, via => nat_via($tr, sent_by => "10.0.0.1:$lp"),
                                     body => 'hi', content_type => 'text/plain'));
    my $d = $t->udp_new_request($b, 3, 'MESSAGE');
    my $m = $d && parse_msg($d);
    ok($m, "proxied ($tr): bob gets the MESSAGE");
    like(($m ? ($m->header_elems('via'))[1] : '') // '',
         qr/^SIP\/2\.0\/$tr 10\.0\.0\.1:$lp;.*received=127\.0\.0\.1/,
         "proxied ($tr): the UA's Via carries received");
    my $cp = $c->sockport;
    my $mark = $t->log_mark;
    close $c;
    ok($t->wait_log($mark, qr/closing $tr connection from 127\.0\.0\.1:$cp /, 5),
       "proxied ($tr): the server saw the UA's connection close");
    $t->udp_send(response_to($m, 200, 'OK', tag => "b$tr"), sock => $b, port => $port) if $m;
    my $n = accept_on($l, 5);
    ok($n, "proxied ($tr): a new connection comes to received at the sent-by port ($lp)");
    my $r = $n && $t->read_response($n, 3);
    is($r && $r->code, 200, "proxied ($tr): bob's 200 comes on it");
    is($r && $r->header('call-id'), $cid, "proxied ($tr): ... for that MESSAGE");
}

$t->dump_log_on_failure;
$t->stop;
done_testing();
