#!/usr/bin/perl
# RFC 3263 server side (issue 17 point 2, docs/dns.md "Publishing DNS
# records for a mod_sip domain"): server B is configured as the chapter's
# example (ServerName b.test; UDP and TCP on one port, TLS with a
# certificate naming b.test on another) and the test DNS server publishes
# the chapter's NAPTR and SRV records for b.test.  Server A, a mod_sip
# proxy using that DNS server, must reach B on every transport the records
# name, choosing as RFC 3263 says: NAPTR order for sip:bob@b.test,
# ;transport=udp / ;transport=tcp, sips: -> SIPS+D2T; its queries go
# NAPTR -> SRV -> A.  Then the same with SRV records only (no NAPTR).
# B's SIP-CGI script answers with the port, HTTPS and Via it saw, and B's
# access log names the transport (SIP_TRANSPORT).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port rand_token);
use SipTls;
use SipDNS;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

# ---- server B: the documentation's example, for the domain b.test
my $btls = free_port();
my $pki;
my $B = SipTest->new(start => 0, setup => sub {
    $pki = SipTls::make_pki($_[0]->dir . '/pki');
    # the certificate names the SIP domain (RFC 5922), not the SRV target
    SipTls::_sign($_[0]->dir . '/pki', 'btest', '/O=mod_sip tests/CN=b.test', 'DNS:b.test',
                  'serverAuth');
    chmod 0644, glob($_[0]->dir . '/pki/*');
    $pki->{btest} = $_[0]->dir . '/pki/btest.crt';
    $pki->{btest_key} = $_[0]->dir . '/pki/btest.key';
});
my $bport = $B->sip_port;
# what arrived, as B's script saw it: the port, HTTPS, the Via on top
$B->write_script('bob@b.test', text => <<'S');
#!/bin/sh
via=$(printf '%s' "$SIP_VIA" | sed 's/,.*//')
printf 'SIP/2.0 200 OK\nX-Arrived: port=%s https=%s method=%s via=%s\n\n' \
    "$SERVER_PORT" "${HTTPS:-off}" "$REQUEST_METHOD" "$via"
S
$B->{vhost_conf} = "ServerName b.test";
$B->{server_conf} = SipTls::modules_conf()
    . "LogFormat \"%{SIP_TRANSPORT}e %m %{Call-ID}i %>s\" bpub\n"
    . "CustomLog \@DIR\@/logs/b_access.log bpub\n"
    . <<"EOC";
Listen 127.0.0.1:$btls
<VirtualHost 127.0.0.1:$btls>
    ServerName b.test
    ProtocolSip On
    SSLEngine on
    SSLCertificateFile $pki->{btest}
    SSLCertificateKeyFile $pki->{btest_key}
    SipDirectory \@SCRIPTS\@
</VirtualHost>
EOC
$B->start;

# ---- the records of docs/dns.md for b.test, served on loopback
my $SOA = "\$ORIGIN test.\ntest. 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30\n";
my $SRV = <<"Z";
_sip._tcp.b.test.  60 IN SRV 10 60 $bport sip1.b.test.
_sip._udp.b.test.  60 IN SRV 10 60 $bport sip1.b.test.
_sips._tcp.b.test. 60 IN SRV 10 60 $btls sip1.b.test.
sip1.b.test.       60 IN A   127.0.0.1
Z
sub naptr {
    my (%order) = @_;
    return join '', map {
        my ($svc, $srv) = @$_;
        "b.test. 60 IN NAPTR $order{$svc} 10 \"s\" \"$svc\" \"\" $srv.b.test.\n"
    } (['SIPS+D2T', '_sips._tcp'], ['SIP+D2T', '_sip._tcp'], ['SIP+D2U', '_sip._udp']);
}
# the chapter's order: TLS, then TCP, then UDP
my $dns = SipDNS->new(zone => $SOA . naptr('SIPS+D2T' => 5, 'SIP+D2T' => 10, 'SIP+D2U' => 20) . $SRV);

# ---- server A: a proxy that knows b.test only through DNS and trusts B's CA
my $atls = free_port();
my $proxy = "SipProxyOutside On\nSSLProxyEngine on\nSSLProxyCACertificateFile $pki->{ca}\n"
          . "SSLProxyVerify require\nSSLProxyCheckPeerName on";
# no cache: every request below resolves afresh, so each one's queries are its own
my $A = SipTest->new(vhost_conf => $proxy,
                     server_conf => SipTls::modules_conf() . SipTls::vhost_conf($pki, $atls, $proxy)
                                  . "SipDNSServer " . $dns->addr . "\nSipDNSCacheSize 0\n");

my $tls = SipTls::tls_connect($atls, $pki);
ok($tls, 'TLS client connected to A') or diag(IO::Socket::SSL::errstr());

sub slurp { my ($f) = @_; open(my $fh, '<', $f) or return ''; local $/; return <$fh> // '' }

# Send $uri through A (UDP, or TLS for sips:); returns the final response.
sub through_a {
    my ($uri, $cid, $method) = @_;
    $method //= 'MESSAGE';
    my @r;
    if ($uri =~ /^sips:/) {
        return undef unless $tls;
        my $raw = $A->sip_request(method => $method, uri => $uri, transport => 'TLS', sock => $tls,
                                  call_id => $cid, from => "<sips:alice\@127.0.0.1>;tag=" . rand_token(6));
        $A->send_raw($tls, $raw) or return undef;
        @r = $A->read_until_final($tls, 10);
    } else {
        @r = $A->udp_req($A->sip_request(method => $method, uri => $uri, call_id => $cid), 10);
    }
    @r = grep { $_->is_response && $_->code >= 200 } @r;
    return $r[-1];
}

# B's access log line for Call-ID $cid: (transport, method, status)
sub b_logged {
    my ($cid) = @_;
    my $end = time + 3;
    while (time < $end) {
        for (split /\n/, slurp($B->dir . '/logs/b_access.log')) {
            my @f = split / /;
            return @f[0, 1, 3] if $f[2] && $f[2] eq $cid;
        }
        sleep 0.05;
    }
    return ();
}

# Index of the first logged query of $type (and name, if given), or -1.
sub first_q {
    my ($log, $type, $name) = @_;
    for my $i (0 .. $#$log) {
        return $i if $log->[$i][2] eq $type && (!defined $name || $log->[$i][1] eq $name);
    }
    return -1;
}

my %PORT = (UDP => $bport, TCP => $bport, TLS => $btls);
my %SRVNAME = (UDP => '_sip._udp.b.test', TCP => '_sip._tcp.b.test', TLS => '_sips._tcp.b.test');

# One request through A to $uri, expected to reach B over $tr.  srv: the
# SRV names A must ask (no others); naptr => 0: A must not ask NAPTR.
sub case {
    my ($what, $uri, $tr, %o) = @_;
    my $method = $o{method} // 'MESSAGE';
    my $cid = 'pub-' . rand_token(10) . '@127.0.0.1';
    $dns->clear_log;
    my $r = through_a($uri, $cid, $method);
    is($r && $r->code, 200, "$what: $method $uri through A: 200 from B");
    my $arr = $r ? $r->header('x-arrived') // '' : '';
    like($arr, qr{\bvia=SIP/2\.0/$tr 127\.0\.0\.1:}i, "$what: B's script saw A's Via over $tr")
        or diag("X-Arrived: $arr");
    like($arr, qr{\bport=$PORT{$tr}\b}, "$what: ... on B's $tr port $PORT{$tr}");
    like($arr, $tr eq 'TLS' ? qr/\bhttps=on\b/ : qr/\bhttps=off\b/,
         "$what: ... " . ($tr eq 'TLS' ? 'with' : 'without') . ' TLS (HTTPS)');
    my @l = b_logged($cid);
    is("@l", "$tr $method 200", "$what: B's access log: SIP_TRANSPORT $tr, 200");

    my $log = $dns->log;
    my @seq = map { "$_->[2] $_->[1]" } @$log;
    my $n = first_q($log, 'NAPTR', 'b.test');
    my $s = first_q($log, 'SRV', $SRVNAME{$tr});
    my $a = first_q($log, 'A', 'sip1.b.test');
    if ($o{naptr} // 1) {
        ok($n >= 0 && $s > $n && $a > $s,
           "$what: A asked NAPTR b.test, then SRV $SRVNAME{$tr}, then A sip1.b.test")
            or diag("queries: @seq");
    } else {
        # RFC 3263 §4.1: the transport is given, so no NAPTR is needed
        ok($n < 0 && $s >= 0 && $a > $s,
           "$what: A asked no NAPTR (transport given), SRV $SRVNAME{$tr}, then A sip1.b.test")
            or diag("queries: @seq");
    }
    # the SRV names asked are the ones the URI allows (and, with NAPTR,
    # the ones the records name): never another transport's for ;transport= or sips:
    my %srv = map { $_->[1] => 1 } grep { $_->[2] eq 'SRV' } @$log;
    my @allowed = @{ $o{srv} };
    is(join(',', sort keys %srv), join(',', sort @allowed), "$what: SRV queries: @allowed")
        or diag("queries: @seq");
    ok(!grep({ $_->[2] =~ /^(A|AAAA)$/ && $_->[1] eq 'b.test' } @$log),
       "$what: no A/AAAA query for b.test itself (SRV found)");
}

my @ALL = values %SRVNAME;

# ---- NAPTR, the documentation's order (SIPS+D2T 5, SIP+D2T 10, SIP+D2U 20)
case('NAPTR TLS first', 'sip:bob@b.test', 'TLS', srv => \@ALL);
case('NAPTR, ;transport=udp', 'sip:bob@b.test;transport=udp', 'UDP', srv => [$SRVNAME{UDP}], naptr => 0);
case('NAPTR, ;transport=tcp', 'sip:bob@b.test;transport=tcp', 'TCP', srv => [$SRVNAME{TCP}], naptr => 0);
case('NAPTR, sips:', 'sips:bob@b.test', 'TLS', srv => [$SRVNAME{TLS}]);
case('NAPTR, INVITE', 'sip:bob@b.test;transport=tcp', 'TCP', srv => [$SRVNAME{TCP}], naptr => 0,
     method => 'INVITE');

# ---- the order is the records' to decide: TCP first, then UDP first
$dns->set_zone($SOA . naptr('SIPS+D2T' => 30, 'SIP+D2T' => 10, 'SIP+D2U' => 20) . $SRV);
case('NAPTR TCP first', 'sip:bob@b.test', 'TCP', srv => \@ALL);
$dns->set_zone($SOA . naptr('SIPS+D2T' => 30, 'SIP+D2T' => 20, 'SIP+D2U' => 10) . $SRV);
case('NAPTR UDP first', 'sip:bob@b.test', 'UDP', srv => \@ALL);

# ---- SRV records only: a client that follows them without NAPTR
$dns->set_zone($SOA . $SRV);
case('SRV only', 'sip:bob@b.test', 'UDP', srv => \@ALL);
case('SRV only, ;transport=udp', 'sip:bob@b.test;transport=udp', 'UDP', srv => [$SRVNAME{UDP}], naptr => 0);
case('SRV only, ;transport=tcp', 'sip:bob@b.test;transport=tcp', 'TCP', srv => [$SRVNAME{TCP}], naptr => 0);
case('SRV only, sips:', 'sips:bob@b.test', 'TLS', srv => [$SRVNAME{TLS}]);

close $tls if $tls;
# stopped here, with SipTest's checks (no crash, nothing left behind); left to global
# destruction the two servers' stop took up to 15 s
$A->stop;
$B->stop;
$dns->stop;
done_testing;
