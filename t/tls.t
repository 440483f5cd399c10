#!/usr/bin/perl
# SIP over TLS, terminated in the SIP engine with the contexts mod_ssl
# builds from the vhost's own SSL* directives (docs/tls.md): requests over
# TLS, mod_ssl's variables for scripts, SSLVerifyClient require, outgoing
# sips: with certificate checks, status counters, bad input, graceful
# restart.  The certificates are made here with the openssl command.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use SipTest qw(free_port wait_until);
use SipTls;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

my ($tport, $mport) = (free_port(), free_port());
my $pki;
my $whoami = "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\r\\nX-Https: %s\\r\\nX-Proto: %s\\r\\nX-Cipher: %s\\r\\n"
    . "X-Dn: %s\\r\\nX-Idn: %s\\r\\nX-Verify: %s\\r\\n\\r\\n' \"\$HTTPS\" \"\$SSL_PROTOCOL\" \"\$SSL_CIPHER\""
    . " \"\$SSL_CLIENT_S_DN\" \"\$SSL_CLIENT_I_DN\" \"\$SSL_CLIENT_VERIFY\"\n";
my $t = SipTest->new(
    start => 0,
    vhost_conf => 'SipProxyOutside On',
    scripts => { 'whoami@127.0.0.1' => $whoami },
    setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
my $proxy = "SipProxyOutside On\nSipTcpMessageTimeout 2\nSSLProxyEngine on\nSSLProxyCACertificateFile $pki->{ca}\n"
          . "SSLProxyVerify require\nSSLProxyCheckPeerName on";
# the UDP/TCP vhost checks TLS servers against the test CA too
$t->{vhost_conf} = $proxy;
$t->{server_conf} = SipTls::modules_conf() . SipTls::status_conf()
    . SipTls::vhost_conf($pki, $tport, $proxy)
    . SipTls::vhost_conf($pki, $mport, "SSLVerifyClient require\nSSLVerifyDepth 2\n"
                         . 'CustomLog @DIR@/logs/tls_dn.log "%{Call-ID}i %>s dn=[%{SSL_CLIENT_S_DN}e]"');
$t->start;
my $engine = $t->engine_pid;

sub slurp { my ($f) = @_; open(my $fh, "<", $f) or return ""; local $/; return <$fh> // "" }

sub tls_req {
    my ($s, $port, %a) = @_;
    my $raw = $t->sip_request(transport => 'TLS', sock => $s, %a);
    $t->send_raw($s, $raw) or return ();
    return $t->read_until_final($s, $a{timeout} // 5);
}

# ---- OPTIONS over TLS, on one connection, twice
{
    my $s = SipTls::tls_connect($tport, $pki);
    ok($s, 'TLS handshake with the ProtocolSip vhost (certificate checked against the test CA)')
        or diag(IO::Socket::SSL::errstr());
    my @r = $s ? tls_req($s, $tport, method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$tport") : ();
    is(@r && $r[-1]->code, 200, 'OPTIONS over TLS answered 200');
    like(@r && ($r[-1]->header('via') // ''), qr{^SIP/2\.0/TLS 127\.0\.0\.1:\d+;.*received=127\.0\.0\.1|^SIP/2\.0/TLS 127\.0\.0\.1:\d+;}, '... with our Via back');
    @r = $s ? tls_req($s, $tport, method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$tport", cseq => 2) : ();
    is(@r && $r[-1]->code, 200, 'a second OPTIONS on the same TLS connection');
    my $st = SipTls::status($t);
    cmp_ok($st && $st->{SipTlsConnectionsNow} // 0, '>=', 1, 'mod_status: SipTlsConnectionsNow counts it');
    cmp_ok($st && $st->{SipTlsMessagesIn} // 0, '>=', 2, 'mod_status: SipTlsMessagesIn');
    cmp_ok($st && $st->{SipTlsMessagesOut} // 0, '>=', 2, 'mod_status: SipTlsMessagesOut');
    close $s if $s;
}

# ---- pipelining: 20 requests in one write, 20 answers in order (they
# leave in as few TLS records as fit)
{
    my $s = SipTls::tls_connect($tport, $pki);
    my @req = map { $t->sip_request(method => 'OPTIONS', transport => 'TLS', sock => $s, cseq => $_,
                                    uri => "sip:nobody\@127.0.0.1:$tport") } 1 .. 20;
    $t->send_raw($s, join '', @req) if $s;
    my @r = $s ? map { $t->read_response($s, 5) } 1 .. 20 : ();
    is(scalar(grep { $_ && $_->code == 200 } @r), 20, 'pipelined over TLS: 20 answers 200');
    is_deeply([ map { $_ ? $_->header('cseq') : '' } @r ], [ map { "$_ OPTIONS" } 1 .. 20 ],
              'pipelined over TLS: in request order');
}

# ---- scripts see mod_ssl's variables
{
    my $s = SipTls::tls_connect($tport, $pki);
    my @r = $s ? tls_req($s, $tport, method => 'MESSAGE', uri => "sip:whoami\@127.0.0.1:$tport") : ();
    my $m = $r[-1];
    is($m && $m->code, 200, 'script run for a request over TLS');
    is($m && $m->header('x-https'), 'on', 'script: HTTPS=on');
    like($m && ($m->header('x-proto') // ''), qr/^TLSv1\.[23]$/, 'script: SSL_PROTOCOL');
    like($m && ($m->header('x-cipher') // ''), qr/^[A-Z0-9_-]+$/, 'script: SSL_CIPHER');
    is($m && $m->header('x-verify'), 'NONE', 'script: SSL_CLIENT_VERIFY=NONE without a client certificate');
    my @u = $t->udp_req($t->sip_request(method => 'MESSAGE', uri => 'sip:whoami@127.0.0.1:' . $t->sip_port));
    is(@u && ($u[-1]->header('x-https') // ''), '', 'script over UDP: no HTTPS');
}

# ---- SSLVerifyClient require
{
    my $s = SipTls::tls_connect($mport, $pki, cert => 'client');
    ok($s, 'mutual TLS: handshake with the client certificate') or diag(IO::Socket::SSL::errstr());
    my @r = $s ? tls_req($s, $mport, method => 'MESSAGE', uri => "sip:whoami\@127.0.0.1:$mport") : ();
    my $m = $r[-1];
    is($m && $m->code, 200, 'mutual TLS: request answered');
    is($m && $m->header('x-dn'), 'CN=alice,OU=phones,O=mod_sip tests', 'script: SSL_CLIENT_S_DN (RFC 2253)');
    is($m && $m->header('x-idn'), 'CN=Test CA,O=mod_sip tests', 'script: SSL_CLIENT_I_DN');
    is($m && $m->header('x-verify'), 'SUCCESS', 'script: SSL_CLIENT_VERIFY=SUCCESS');

    # REGISTERs of several AoRs on that connection: with several engines
    # (SIP_TEST_ENGINES) most are handed to their AoR's home engine, which
    # logs them with the subject the engine holding the connection saw.
    my $n = 6;
    my $ok = 0;
    for my $i (1 .. ($s ? $n : 0)) {
        my $u = "dn$i" . lc SipTest::rand_token(4);
        my @rr = tls_req($s, $mport, method => 'REGISTER', uri => "sip:127.0.0.1:$mport",
                         to => "<sip:$u\@127.0.0.1>", from => "<sip:$u\@127.0.0.1>;tag=t$i",
                         call_id => "tlsdn-$i-$u",
                         headers => [ Contact => "<sip:$u\@127.0.0.1:5999;transport=tls>", Expires => 60 ]);
        $ok++ if @rr && $rr[-1]->code == 200;
    }
    is($ok, $n, "mutual TLS: $n REGISTERs of different AoRs on one connection: 200 each");
    my $dnlog = $t->dir . '/logs/tls_dn.log';
    ok(wait_until(3, sub { (() = slurp($dnlog) =~ /^tlsdn-/mg) >= $n }), '... each logged');
    my @lines = grep { /^tlsdn-/ } split /\n/, slurp($dnlog);
    is(scalar(grep { /dn=\[CN=alice,OU=phones,O=mod_sip tests\]/ } @lines), $n,
       '... each with the client certificate subject (%{SSL_CLIENT_S_DN}e), whichever engine applied it')
        or diag(join "\n", @lines);

    for my $case (['no client certificate', undef], ['a certificate from an unknown CA', 'rogue']) {
        my $mark = $t->log_mark;
        my $c = SipTls::tls_connect($mport, $pki, $case->[1] ? (cert => $case->[1]) : ());
        # TLS 1.3: the client learns of the refusal after its handshake ends
        my @r2 = $c ? tls_req($c, $mport, method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$mport", timeout => 3) : ();
        ok(!@r2, "mutual TLS: $case->[0] is refused (no answer)");
        ok($t->wait_log($mark, qr/TLS (handshake from client|client certificate)/, 5),
           "mutual TLS: $case->[0]: a log line says why");
    }
}

# ---- outgoing sips: with the certificate checked (SSLProxyCACertificateFile)
{
    my $uport = free_port();
    my $log = $t->dir . '/uas-good.log';
    my $uas = SipTls::tls_uas($uport, $pki, 'server', $log, 15);
    my $s = SipTls::tls_connect($tport, $pki);
    my @r = $s ? tls_req($s, $tport, method => 'MESSAGE', uri => "sips:bob\@127.0.0.1:$uport", timeout => 8) : ();
    is(@r && $r[-1]->code, 200, 'sips: target reached over TLS, its 200 relayed back');
    my $got = slurp($log);
    like($got, qr{^MESSAGE sips:bob\@127\.0\.0\.1:$uport SIP/2\.0}m, 'the UAS got the MESSAGE');
    like($got, qr{^Via: SIP/2\.0/TLS 127\.0\.0\.1:\d+;branch=z9hG4bK}mi, "... with the proxy's Via SIP/2.0/TLS");
    kill 'TERM', $uas;
    waitpid($uas, 0);

    # a certificate for another name: no request goes out; the branch ends
    # in 503, which a proxy passes on as 500 (RFC 3261 §16.7 step 6)
    $uport = free_port();
    $log = $t->dir . '/uas-other.log';
    $uas = SipTls::tls_uas($uport, $pki, 'other', $log, 15);
    my $mark = $t->log_mark;
    @r = $s ? tls_req($s, $tport, method => 'MESSAGE', uri => "sips:bob\@127.0.0.1:$uport", cseq => 2,
                      timeout => 8) : ();
    is(@r && $r[-1]->code, 500, 'sips: target whose certificate does not match: 500 (503 of the branch)');
    ok(!-s $log, '... and no request reached it');
    ok($t->wait_log($mark, qr/TLS server certificate of 127\.0\.0\.1:$uport refused.*hostname mismatch|TLS handshake with server 127\.0\.0\.1:$uport failed/, 3),
       '... a log line names the refused certificate');
    kill 'TERM', $uas;
    waitpid($uas, 0);

    # ;transport=tls on a sip: URI goes out over TLS too
    $uport = free_port();
    $log = $t->dir . '/uas-param.log';
    $uas = SipTls::tls_uas($uport, $pki, 'server', $log, 15);
    my @u = $t->udp_req($t->sip_request(method => 'MESSAGE', uri => "sip:bob\@127.0.0.1:$uport;transport=tls"), 8);
    is(@u && $u[-1]->code, 200, 'sip:...;transport=tls from a UDP client goes out over TLS');
    $got = slurp($log);
    like($got, qr{^Via: SIP/2\.0/TLS 127\.0\.0\.1:$tport;}mi, '... with Via SIP/2.0/TLS and the TLS port');
    my $sp = $t->sip_port;
    like($got, qr{^Record-Route: <sip:127\.0\.0\.1:$tport;transport=tls;lr;[^>]*>(?:, *|\r?\nRecord-Route: *)<sip:127\.0\.0\.1:$sp;lr;}mi,
         '... Record-Route: the TLS side on the TLS port, then the UDP side (RFC 5658)')
        or diag($got);
    kill 'TERM', $uas;
    waitpid($uas, 0);
}

# ---- garbage and a stalled handshake leave the engine serving
{
    my $g = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $tport, Proto => 'tcp', Timeout => 3);
    ok($g, 'plain TCP connection to the TLS port');
    print $g "OPTIONS sip:x\@127.0.0.1 SIP/2.0\r\n\r\n" . join('', map { chr(int rand 256) } 1 .. 2000) if $g;
    my $sel = IO::Select->new($g);
    my $closed = 0;
    my $end = time + 5;
    while (time < $end && $sel->can_read($end - time)) {
        my $n = sysread($g, my $b, 4096);
        if (!$n) { $closed = 1; last }
    }
    ok($closed, 'garbage on the TLS port: the connection is closed');
    my $h = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $tport, Proto => 'tcp', Timeout => 3);
    # the first bytes of a ClientHello, then nothing
    print $h "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" if $h;
    my $s = SipTls::tls_connect($tport, $pki);
    my @r = $s ? tls_req($s, $tport, method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$tport") : ();
    is(@r && $r[-1]->code, 200, 'OPTIONS answered while another client stalls mid-handshake');
    is($t->engine_pid, $engine, 'the engine is the same process');
    # the handshake runs under SipTcpMessageTimeout (2 s here)
    my $eof = 0;
    my $sel2 = IO::Select->new($h);
    my $end2 = time + 6;
    while ($h && time < $end2 && $sel2->can_read($end2 - time)) {
        my $n = sysread($h, my $b, 4096);
        if (!$n) { $eof = 1; last }
    }
    ok($eof, 'a stalled handshake is closed after SipTcpMessageTimeout');
    ok($t->wait_log(0, qr/TLS connection from 127\.0\.0\.1:\d+ closed: handshake not done within 2 s/, 2),
       '... with a log line');
    my $st = SipTls::status($t);
    cmp_ok($st && $st->{SipTlsHandshakeFailures} // 0, '>=', 4,
           'mod_status: SipTlsHandshakeFailures counts the refusals, the garbage and the mismatch');
    close $h if $h;
}

# ---- graceful restart keeps serving TLS (the new engine gets mod_ssl's new contexts)
{
    $t->apachectl('graceful');
    ok(wait_until(15, sub { my $p = $t->engine_pid; $p && $p != $engine }), 'graceful restart: a new engine');
    my @r;
    wait_until(10, sub {
        my $s = SipTls::tls_connect($tport, $pki) or return 0;
        @r = tls_req($s, $tport, method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$tport");
        return @r && $r[-1]->code == 200;
    }, 0.3);
    is(@r && $r[-1]->code, 200, 'graceful restart: OPTIONS over TLS answered');
    my $c = SipTls::tls_connect($mport, $pki, cert => 'client');
    @r = $c ? tls_req($c, $mport, method => 'MESSAGE', uri => "sip:whoami\@127.0.0.1:$mport") : ();
    is(@r && $r[-1]->header('x-dn'), 'CN=alice,OU=phones,O=mod_sip tests',
       'graceful restart: mutual TLS still sees the client certificate');
}

my @crash = $t->crash_lines;
ok(!@crash, 'no crash in the error log') or diag(join "\n", @crash);
$t->dump_log_on_failure;
$t->stop;
done_testing;
