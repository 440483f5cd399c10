package SipTls;
# TLS helpers for the black-box tests: a throw-away PKI made with the
# openssl command (a CA, a server certificate for 127.0.0.1/localhost, a
# client certificate, and a server certificate for another name), the
# httpd configuration of a ProtocolSip TLS virtual host, and TLS client
# sockets (IO::Socket::SSL) that SipTest's read/send helpers accept.
#
#   my $pki = SipTls::make_pki("$dir/pki");
#   my $conf = SipTls::vhost_conf($pki, $tls_port, 'SSLVerifyClient require');
#   my $s = SipTls::connect($tls_port, $pki, cert => 1);

use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);
use Exporter 'import';

our @EXPORT_OK = qw(make_pki vhost_conf tls_connect have_tls_client);

our $MODDIR = '/usr/lib/apache2/modules';

sub have_tls_client {
    return eval { require IO::Socket::SSL; IO::Socket::SSL->VERSION(2.0); 1 };
}

sub _run {
    my (@cmd) = @_;
    my $out = `@cmd 2>&1`;
    die "SipTls: '@cmd' failed: $out" if $?;
}

sub _sign {
    my ($d, $name, $subj, $san, $ext_usage) = @_;
    open(my $fh, '>', "$d/$name.ext") or die "$d/$name.ext: $!";
    print $fh "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        . "extendedKeyUsage=$ext_usage\n" . ($san ? "subjectAltName=$san\n" : '');
    close $fh;
    _run("openssl req -new -newkey rsa:2048 -nodes -keyout $d/$name.key -subj '$subj'"
         . " -out $d/$name.csr");
    _run("openssl x509 -req -in $d/$name.csr -CA $d/ca.crt -CAkey $d/ca.key -CAcreateserial"
         . " -days 2 -extfile $d/$name.ext -out $d/$name.crt");
}

# Certificates in $d; returns a hash of their paths.
sub make_pki {
    my ($d) = @_;
    mkdir $d;
    _run("openssl req -x509 -newkey rsa:2048 -nodes -keyout $d/ca.key -out $d/ca.crt"
         . " -days 2 -subj '/O=mod_sip tests/CN=Test CA'"
         . " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign");
    _sign($d, 'server', '/O=mod_sip tests/CN=localhost', 'IP:127.0.0.1,DNS:localhost',
          'serverAuth,clientAuth');
    _sign($d, 'client', '/O=mod_sip tests/OU=phones/CN=alice', '', 'clientAuth');
    _sign($d, 'other', '/O=mod_sip tests/CN=other.example', 'DNS:other.example', 'serverAuth');
    # a CA nobody trusts, for a client certificate that must be refused
    _run("openssl req -x509 -newkey rsa:2048 -nodes -keyout $d/rogue.key -out $d/rogue.crt"
         . " -days 2 -subj '/O=rogue/CN=mallory'");
    chmod 0644, glob("$d/*");
    return { map { ($_ => "$d/$_.crt", "${_}_key" => "$d/$_.key") }
             qw(ca server client other rogue) };
}

# Modules mod_ssl needs, for server_conf.
sub modules_conf {
    return "LoadModule ssl_module $MODDIR/mod_ssl.so\n"
         . "LoadModule socache_shmcb_module $MODDIR/mod_socache_shmcb.so\n";
}

# A ProtocolSip TLS virtual host on 127.0.0.1:$port (for server_conf).
sub vhost_conf {
    my ($pki, $port, $extra, %o) = @_;
    my $cert = $o{cert} // 'server';
    $extra //= '';
    return <<"EOC";
Listen 127.0.0.1:$port
<VirtualHost 127.0.0.1:$port>
    ServerName 127.0.0.1
    ProtocolSip On
    SipDirectory \@SCRIPTS\@
    SSLEngine on
    SSLCertificateFile $pki->{$cert}
    SSLCertificateKeyFile $pki->{"${cert}_key"}
    SSLCACertificateFile $pki->{ca}
$extra
</VirtualHost>
EOC
}

# A TLS client connection to 127.0.0.1:$port checked against the test CA;
# cert => 'client' (or 'rogue') presents that certificate.  undef (and $@
# or $IO::Socket::SSL::SSL_ERROR set) when the handshake fails.
my %CTX;   # one client context per PKI, certificate and name: no CA file read per connection

sub tls_connect {
    my ($port, $pki, %o) = @_;
    require IO::Socket::SSL;
    my $key = join "\0", $pki->{ca}, $o{cert} // '', $o{name} // '';
    $CTX{$key} //= IO::Socket::SSL::SSL_Context->new(
        SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_PEER(),
        SSL_ca_file => $pki->{ca},
        SSL_verifycn_name => $o{name} // '127.0.0.1',
        SSL_verifycn_scheme => 'http',
        ($o{cert} ? (SSL_cert_file => $pki->{ $o{cert} }, SSL_key_file => $pki->{"$o{cert}_key"})
                  : ()),
    ) or return undef;
    my $s = IO::Socket::SSL->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => $o{timeout} // 5,
        SSL_reuse_ctx => $CTX{$key},
        SSL_verifycn_name => $o{name} // '127.0.0.1', SSL_verifycn_scheme => 'http',
    ) or return undef;
    $s->autoflush(1);
    ${*$s}{siptest_buf} = '';
    return $s;
}

# mod_status for the HTTP side of the test server (for server_conf).
sub status_conf {
    return "LoadModule status_module $MODDIR/mod_status.so\n"
         . "<Location /server-status>\n    SetHandler server-status\n</Location>\n";
}

# /server-status?auto as a hash (undef when it cannot be fetched).
sub status {
    my ($t) = @_;
    my $buf = $t->http_get('/server-status?auto');
    return undef unless $buf =~ m{^HTTP/1\.\d 200};
    my %h = $buf =~ /^(\w[\w ]*?): (\S+)\r?$/mg;
    return \%h;
}

# A TLS UAS on 127.0.0.1:$port (a forked child) with certificate $cert of
# the test PKI: it answers every request 200 and appends each one it
# got, then "----\n", to $log.  Returns its pid; it exits after $secs s.
sub tls_uas {
    my ($port, $pki, $cert, $log, $secs) = @_;
    require IO::Socket::SSL;
    my $l = IO::Socket::SSL->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 16,
                                 ReuseAddr => 1, SSL_server => 1,
                                 SSL_cert_file => $pki->{$cert}, SSL_key_file => $pki->{"${cert}_key"})
        or die "tls_uas: listen: " . IO::Socket::SSL::errstr();
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    return $pid if $pid;
    my $end = time + ($secs // 20);
    my $sel = IO::Select->new($l);
    my %buf;
    while (time < $end) {
        for my $s ($sel->can_read(0.2)) {
            if ($s == $l) {
                my $c = $l->accept;     # the handshake; undef when the client gave up
                $sel->add($c) if $c;
                next;
            }
            my $n = sysread($s, my $b, 65536);
            if (!$n) { $sel->remove($s); close $s; next }
            $buf{$s} .= $b;
            while ($buf{$s} =~ /\r\n\r\n/) {
                my $hl = $+[0];
                my ($cl) = substr($buf{$s}, 0, $hl) =~ /^Content-Length:\s*(\d+)/mi;
                last if length($buf{$s}) < $hl + ($cl // 0);
                my $req = substr($buf{$s}, 0, $hl + ($cl // 0), '');
                if (open(my $fh, '>>', $log)) { print $fh $req, "----\n"; close $fh }
                next if $req =~ /^ACK /;
                my $resp = "SIP/2.0 200 OK\r\n";
                for my $h (qw(Via From To Call-ID CSeq)) {
                    $resp .= "$1\r\n" while $req =~ /^($h:.*?)\r$/mgi;
                }
                $resp =~ s/^(To:[^\r\n]*)/$1;tag=uas1/mi unless $req =~ /^To:.*;tag=/mi;
                print $s $resp . "Content-Length: 0\r\n\r\n";
            }
        }
    }
    POSIX::_exit(0);
}

1;
