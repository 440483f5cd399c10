#!/usr/bin/perl
# CRLF keep-alives (RFC 5626 §4.4.1) on every transport, one server:
#   - TCP and TLS: a double-CRLF ping gets exactly one CRLF pong, also when
#     the ping comes in two writes, and when a request follows it in the same
#     write (pong, then the answer); a lone CRLF (RFC 3261 §7.5) gets none;
#     pings keep a connection open past SipTcpIdleTimeout, a silent one
#     next to it is closed;
#   - WebSocket (RFC 7118 defines none of its own; SIP.js sends the CRLF ping
#     as a text message): a "\r\n\r\n" message gets a "\r\n" message, a
#     WebSocket ping a pong with its data (RFC 6455 §5.5.2), and both keep
#     the connection past the idle timeout; the same answers on wss://
#     relayed by mod_ssl (the engine's WSS);
#   - UDP: a stray CRLF or double CRLF gets no answer and is no bad message.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use SipTest qw(free_port wait_until);
use SipTls;
use SipWs;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

my $IDLE = 2;
my $tport = free_port();
my $wport = free_port();     # HTTPS, wss:// relayed by mod_ssl
my $pki;
my $t = SipTest->new(
    start => 0,
    vhost_conf => "SipTcpIdleTimeout $IDLE",
    setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
$t->{server_conf} = SipTls::modules_conf() . SipTls::status_conf()
    . SipTls::vhost_conf($pki, $tport, "    SipTcpIdleTimeout $IDLE")
    . "SipTcpIdleTimeout $IDLE\n<Location /sip>\n    SipWebSocket On\n</Location>\n"
    . "Listen 127.0.0.1:$wport\n<VirtualHost 127.0.0.1:$wport>\n    ServerName 127.0.0.1\n"
    . "    SSLEngine on\n    SSLCertificateFile $pki->{server}\n"
    . "    SSLCertificateKeyFile $pki->{server_key}\n</VirtualHost>\n";
$t->start;
my $port = $t->sip_port;

# Everything that arrives on stream $s within $timeout seconds.
sub drain_raw {
    my ($s, $timeout) = @_;
    my $got = '';
    my $end = time + $timeout;
    while ((my $left = $end - time) > 0) {
        my $b = $t->read_raw($s, 1, $left);
        last unless length $b;
        $got .= $b;
    }
    return $got;
}

# ---- TCP and TLS: the same checks on each
my %open = (TCP => sub { $t->tcp_connect }, TLS => sub { SipTls::tls_connect($tport, $pki) });
for my $tr (qw(TCP TLS)) {
    my $dport = $tr eq 'TLS' ? $tport : $port;
    my $c = $open{$tr}->() or BAIL_OUT("no $tr connection");
    $t->send_raw($c, "\r\n\r\n");
    is($t->read_raw($c, 2, 2), "\r\n", "$tr: a CRLFCRLF ping gets a CRLF pong");
    is(drain_raw($c, 0.4), '', "$tr: exactly one pong");

    $t->send_raw($c, "\r\n");
    sleep 0.3;
    $t->send_raw($c, "\r\n");
    is($t->read_raw($c, 2, 2), "\r\n", "$tr: a ping in two writes gets a pong");
    is(drain_raw($c, 0.4), '', "$tr: ... one");

    my $req = $t->sip_request(method => 'OPTIONS', transport => $tr, sock => $c,
                              uri => "sip:nobody\@127.0.0.1:$dport");
    $t->send_raw($c, "\r\n\r\n" . $req);
    is($t->read_raw($c, 2, 2), "\r\n", "$tr: a ping and a request in one write: the pong first");
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 200, "$tr: ... then the request's answer");

    # RFC 3261 §7.5: CRLFs before a request are skipped, not answered
    $t->send_raw($c, "\r\n" . $req =~ s/CSeq: 1 /CSeq: 2 /r);
    $m = $t->read_response($c, 3);
    is($m && $m->code, 200, "$tr: a lone CRLF before a request is skipped");
    is(${*$c}{siptest_pongs} // 0, 0, "$tr: ... and gets no pong");

    # idle timeout: a pinging connection stays, a silent one goes
    my $quiet = $open{$tr}->() or BAIL_OUT("no $tr connection");
    my ($pongs, $pings) = (0, 0);
    my $end = time + $IDLE * 2;
    while (time < $end) {
        $t->send_raw($c, "\r\n\r\n");
        $pings++;
        $pongs++ if $t->read_raw($c, 2, 1) eq "\r\n";
        sleep 0.5;
    }
    is($pongs, $pings, "$tr: every ping over " . ($IDLE * 2) . " s answered ($pings)");
    ok($t->tcp_eof($quiet) || drain_raw($quiet, 0.5) eq '' && $t->tcp_eof($quiet),
       "$tr: a silent connection opened meanwhile was closed by SipTcpIdleTimeout $IDLE");
    $t->send_raw($c, $req =~ s/CSeq: 1 /CSeq: 3 /r);
    $m = $t->read_response($c, 3);
    is($m && $m->code, 200, "$tr: the pinging connection is still open and served");
    close $c;
}

# ---- secure WebSocket relayed by mod_ssl (the engine sees kind WSS)
{
    my $ws = SipWs->connect(port => $wport, path => '/sip', tls => 1);
    ok($ws && $ws->status == 101, 'WSS: connected') or BAIL_OUT('no secure WebSocket');
    $ws->send_text("\r\n\r\n");
    my ($op, $p) = $ws->recv_frame(2);
    is($op, SipWs::TEXT, 'WSS: a "\r\n\r\n" text message is answered with a text message');
    is($p, "\r\n", 'WSS: ... "\r\n"');
    $ws->ping('ka');
    ($op, $p) = $ws->recv_frame(2);
    is($op, SipWs::PONG, 'WSS: a WebSocket ping gets a pong');
    is($p, 'ka', 'WSS: ... with its data');
    $ws->send_text($t->sip_request(method => 'OPTIONS', transport => 'WSS', via_port => 0,
                                   uri => "sip:nobody\@127.0.0.1:$port"));
    like($ws->recv_msg(3) // '', qr{^SIP/2\.0 200 }, 'WSS: and a request after them is answered');
}

# ---- WebSocket
{
    my $ws = SipWs->connect(port => $t->http_port, path => '/sip');
    ok($ws && $ws->status == 101, 'WS: connected') or BAIL_OUT('no WebSocket');
    $ws->send_text("\r\n\r\n");
    my ($op, $p) = $ws->recv_frame(2);
    is($op, SipWs::TEXT, 'WS: a "\r\n\r\n" text message is answered with a text message');
    is($p, "\r\n", 'WS: ... "\r\n" (RFC 5626 §4.4.1 pong)');
    $ws->ping('ka');
    ($op, $p) = $ws->recv_frame(2);
    is($op, SipWs::PONG, 'WS: a WebSocket ping gets a pong');
    is($p, 'ka', 'WS: ... with its data');
    my $quiet = SipWs->connect(port => $t->http_port, path => '/sip');
    my ($ok, $n) = (0, 0);
    my $end = time + $IDLE * 2;
    while (time < $end) {
        if ($n++ % 2) { $ws->ping("p$n") } else { $ws->send_text("\r\n\r\n") }
        my ($o, $q) = $ws->recv_frame(1);
        $ok++ if defined $o && ($o == SipWs::PONG && $q eq "p$n" || $o == SipWs::TEXT && $q eq "\r\n");
        sleep 0.5;
    }
    is($ok, $n, "WS: every keep-alive over " . ($IDLE * 2) . " s answered ($n)");
    ok($quiet->wait_eof(1), 'WS: a silent WebSocket opened meanwhile was closed by the idle timeout');
    $ws->send_text($t->sip_request(method => 'OPTIONS', transport => 'WS', via_port => 0,
                                   uri => "sip:nobody\@127.0.0.1:$port"));
    my $m = $ws->recv_msg(3);
    like($m // '', qr{^SIP/2\.0 200 }, 'WS: the keep-alive connection is still open and served');
}

# ---- UDP: CRLFs are no message
{
    my $u = $t->udp_socket;
    my $st0 = SipTls::status($t) // {};
    for my $ka ("\r\n", "\r\n\r\n") {
        $t->udp_send($ka, sock => $u);
        ok(!defined $t->udp_recv($u, 0.5), 'UDP: ' . (length($ka) == 2 ? 'a CRLF' : 'a double CRLF')
           . ' gets no answer');
    }
    my @r = $t->udp_req($t->sip_request(uri => "sip:nobody\@127.0.0.1:$port", sock => $u), 3, sock => $u);
    is(@r ? $r[-1]->code : 0, 200, 'UDP: OPTIONS from the same socket answered');
    my $st1 = SipTls::status($t) // {};
    for my $k (qw(SipBadMessages SipStunDropped SipStunBindings)) {
        ok(defined $st0->{$k} && defined $st1->{$k} && $st1->{$k} == $st0->{$k},
           "UDP: $k did not move: CRLFs are neither bad SIP nor STUN");
    }
}

$t->dump_log_on_failure;
$t->stop;
done_testing();
