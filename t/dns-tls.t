#!/usr/bin/perl
# A sips: target found by RFC 3263 SRV (_sips._tcp): the proxy connects
# over TLS to the SRV target and checks the certificate against the
# domain of the URI, not the SRV target's name (RFC 5922 §4): a server
# whose certificate names the domain is reached; one whose certificate
# names another domain gets nothing, and the branch ends in 503 (500 up).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port);
use SipTls;
use SipDNS;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

my ($tport, $good, $bad) = (free_port(), free_port(), free_port());
my $dns = SipDNS->new(zone => <<"Z");
\$ORIGIN example.
example.                   60 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 30
_sips._tcp.other.example.  60 IN SRV 10 10 $good sip1.hosting.example.
_sips._tcp.wrong.example.  60 IN SRV 10 10 $bad sip2.hosting.example.
sip1.hosting.example.      60 IN A 127.0.0.1
sip2.hosting.example.      60 IN A 127.0.0.1
Z
my $pki;
my $t = SipTest->new(start => 0, setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
my $proxy = "SipProxyOutside On\nSSLProxyEngine on\nSSLProxyCACertificateFile $pki->{ca}\n"
          . "SSLProxyVerify require\nSSLProxyCheckPeerName on";
$t->{vhost_conf} = $proxy;
$t->{server_conf} = SipTls::modules_conf() . SipTls::vhost_conf($pki, $tport, $proxy)
                  . "SipDNSServer " . $dns->addr . "\n";
$t->start;

sub slurp { my ($f) = @_; open(my $fh, '<', $f) or return ''; local $/; return <$fh> // '' }
sub tls_req {
    my ($s, %a) = @_;
    $t->send_raw($s, $t->sip_request(transport => 'TLS', sock => $s, %a)) or return ();
    return $t->read_until_final($s, $a{timeout} // 8);
}

my $s = SipTls::tls_connect($tport, $pki);
ok($s, 'TLS client connected') or diag(IO::Socket::SSL::errstr());

# the certificate names other.example (the URI's domain), not sip1.hosting.example
{
    my $log = $t->dir . '/good.log';
    my $uas = SipTls::tls_uas($good, $pki, 'other', $log, 15);
    my @r = $s ? tls_req($s, method => 'MESSAGE', uri => 'sips:bob@other.example') : ();
    is(@r && $r[-1]->code, 200, 'sips:bob@other.example via _sips._tcp SRV: reached over TLS, 200');
    my $got = slurp($log);
    like($got, qr{^MESSAGE sips:bob\@other\.example SIP/2\.0}m, '... the UAS got the MESSAGE');
    like($got, qr{^Via: SIP/2\.0/TLS }mi, '... over TLS');
    is($dns->queries('_sips._tcp.other.example', 'SRV'), 1, 'the _sips._tcp SRV was asked');
    kill 'TERM', $uas;
    waitpid($uas, 0);
}

# the SRV of wrong.example leads to a server whose certificate names other.example
{
    my $log = $t->dir . '/bad.log';
    my $uas = SipTls::tls_uas($bad, $pki, 'other', $log, 15);
    my $mark = $t->log_mark;
    my @r = $s ? tls_req($s, method => 'MESSAGE', uri => 'sips:bob@wrong.example', cseq => 2) : ();
    is(@r && $r[-1]->code, 500, 'certificate for another domain: 500 (the branch\'s 503)');
    ok(!-s $log, '... and no request reached it');
    ok($t->wait_log($mark, qr/TLS server certificate of 127\.0\.0\.1:$bad refused|TLS handshake with server 127\.0\.0\.1:$bad failed/, 3),
       '... a log line names the refused certificate');
    kill 'TERM', $uas;
    waitpid($uas, 0);
}
close $s if $s;
$dns->stop;
done_testing;
