#!/usr/bin/perl
# SIPp over TLS.  Debian's sipp (sip-tester) is built without OpenSSL
# ("-t l1": "you must compile SIPp with OpenSSL"), so each sipp speaks TCP
# to a local socat that carries the stream over TLS (checked against the
# test CA), and the TLS leg to mod_sip is real:
#   UAC sipp -t t1 -> socat -> TLS -> mod_sip                 OPTIONS, REGISTER
#   UAC sipp -> socat -> TLS -> mod_sip -> UDP -> UAS sipp    a proxied call
#   UAC sipp -> socat -> TLS -> mod_sip -> TLS -> socat -> UAS sipp (t1)
use strict;
use warnings;
use Test::More;
use POSIX ();
use SipTest qw(free_port wait_until);
use SipTls;

SipTest::sipp_available() or do { done_testing; exit 1 };
my $SOCAT = '/usr/bin/socat';
-x $SOCAT or do { fail('socat installed (Debian package socat)'); done_testing; exit 1 };

my $tport = free_port();
my $pki;
my $t = SipTest->new(start => 0, vhost_conf => 'SipProxyOutside On',
                     setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
$t->{server_conf} = SipTls::modules_conf() . SipTls::status_conf()
    . SipTls::vhost_conf($pki, $tport, "SipProxyOutside On\nSSLProxyEngine on\n"
                         . "SSLProxyCACertificateFile $pki->{ca}\nSSLProxyVerify require");
$t->start;

my @socats;
# socat ADDRESS1 ADDRESS2 in the background; returns once it listens on $port.
sub socat {
    my ($port, @addr) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', $t->dir . '/socat.log');
        open(STDERR, '>&', \*STDOUT);
        exec $SOCAT, '-d', @addr;
        POSIX::_exit(127);
    }
    push @socats, $pid;
    wait_until(5, sub { SipTest::port_bound($port, 'tcp') }, 0.05);
    return $pid;
}

# TCP on 127.0.0.1:$bridge -> TLS to the TLS vhost (name checked: localhost)
my $bridge = free_port();
socat($bridge, "TCP-LISTEN:$bridge,bind=127.0.0.1,reuseaddr,fork",
      "OPENSSL:127.0.0.1:$tport,cafile=$pki->{ca},verify=1,commonname=localhost");

# ---- OPTIONS and REGISTER
{
    my $h = $t->sipp_start(name => 'tls-uac', sf => 'tls-uac.xml', transport => 't1', m => 3,
                           service => 'tlsreg', remote => "127.0.0.1:$bridge",
                           keys => { domain => "127.0.0.1:$tport" });
    $t->sipp_ok($h, calls => 3, label => 'sipp over TLS: OPTIONS, REGISTER, unREGISTER');
    my @sent = SipTest::sipp_msgs($h, dir => 'received');
    ok(scalar(grep { $_->is_response && ($_->header('via') // '') =~ m{^SIP/2\.0/TLS } } @sent) >= 9,
       'responses carry the Via SIP/2.0/TLS the UAC sent');
}

my $st = SipTls::status($t);
cmp_ok($st && $st->{SipTlsMessagesIn} // 0, '>=', 9, 'mod_status: SipTlsMessagesIn counts the sipp requests');
cmp_ok($st && $st->{SipTlsConnectionsTotal} // 0, '>=', 1, 'mod_status: SipTlsConnectionsTotal');

# ---- a proxied call: TLS in, UDP out
{
    my $uas = $t->sipp_start(name => 'uas-udp', sf => 'proxy-uas-call.xml', m => 2, d => 100);
    my $uac = $t->sipp_start(name => 'uac-tls', sf => 'proxy-uac-call.xml', m => 2, transport => 't1',
                             service => 'bob', remote => "127.0.0.1:$uas->{port}",
                             rsa => "127.0.0.1:$bridge", keys => { uri_params => '' });
    $t->sipp_ok($uac, calls => 2, label => 'call TLS -> UDP: UAC');
    $t->sipp_ok($uas, calls => 2, label => 'call TLS -> UDP: UAS');
    my ($inv) = SipTest::sipp_msgs($uas, dir => 'received', method => 'INVITE');
    my @rr = $inv ? map { split /\s*,\s*/ } $inv->headers('record-route') : ();
    ok(@rr == 2 && $rr[0] !~ /transport=/ && $rr[1] =~ /^<sip:127\.0\.0\.1:$tport;transport=tls;lr/,
       'INVITE at the UAS: Record-Route for the UDP side, then for the TLS side (RFC 5658)')
        or diag(join "\n", @rr);
    like($inv ? $inv->header('via') // '' : '', qr{^SIP/2\.0/UDP 127\.0\.0\.1:}, "the proxy's Via is UDP toward the UAS");
}

# ---- a proxied call: TLS in, TLS out (;transport=tls), the UAS behind a TLS socat
{
    my $uport = free_port();
    my $uas = $t->sipp_start(name => 'uas-tls', sf => 'proxy-uas-call.xml', m => 1, d => 100,
                             transport => 't1');
    socat($uport, "OPENSSL-LISTEN:$uport,bind=127.0.0.1,reuseaddr,fork,cert=$pki->{server},"
                  . "key=$pki->{server_key},verify=0", "TCP:127.0.0.1:$uas->{port}");
    my $uac = $t->sipp_start(name => 'uac-tls2', sf => 'proxy-uac-call.xml', m => 1, transport => 't1',
                             service => 'bob', remote => "127.0.0.1:$uport",
                             rsa => "127.0.0.1:$bridge", keys => { uri_params => ';transport=tls' });
    $t->sipp_ok($uac, calls => 1, label => 'call TLS -> TLS: UAC');
    $t->sipp_ok($uas, calls => 1, label => 'call TLS -> TLS: UAS');
    my ($inv) = SipTest::sipp_msgs($uas, dir => 'received', method => 'INVITE');
    like($inv ? $inv->header('via') // '' : '', qr{^SIP/2\.0/TLS 127\.0\.0\.1:\d+;branch=z9hG4bK},
         "the proxy's Via toward the UAS is SIP/2.0/TLS");
    my @rr = $inv ? map { split /\s*,\s*/ } $inv->headers('record-route') : ();
    ok(@rr == 1 && $rr[0] =~ /^<sip:127\.0\.0\.1:$tport;transport=tls;lr/,
       'one Record-Route with transport=tls (same transport on both sides)') or diag(join "\n", @rr);
}

ok($t->options_ok('udp'), 'server still answers over UDP');
kill 'TERM', @socats;
waitpid($_, 0) for @socats;
$t->dump_log_on_failure;
$t->stop;
done_testing;
