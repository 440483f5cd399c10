#!/usr/bin/perl
# SIP digest authentication (RFC 3261 §22, RFC 2617 qop=auth) with Apache's
# authn providers: an htdigest-format AuthUserFile, AuthName as the realm,
# SipAuth On in a <Location>; 401 for the registrar, 407 as a proxy, stale
# nonces, nonce-count replays, users registering others, AUTH_TYPE and
# REMOTE_USER for scripts, %u in the access log.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep);
use SipTest qw(parse_msg wait_until);
use SipRegTest;
use SipDigest qw(digest_challenge digest_credentials write_htdigest);

my $MODDIR = '/usr/lib/apache2/modules';
my $realm = 'sip.test';
my %pw = (alice => 'wonderland', bob => 'builder');

my $t = SipRegTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        '<Location "/">',
        '    SipAuth On',
        "    AuthName \"$realm\"",
        '    AuthUserFile @DIR@/users.htdigest',
        '</Location>',
        '<Location "/free@127.0.0.1">',
        '    SipAuth Off',
        '</Location>',
        'LogFormat "%u %>s \\"%r\\"" authlog',
        ''),
    vhost_conf => "SipProxyOutside On\nSipNonceLifetime 3\nCustomLog \@DIR\@/logs/auth.log authlog",
    scripts => {
        'whoami@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-Auth: %s %s\\n\\n' \"\${AUTH_TYPE:-none}\" \"\${REMOTE_USER:-none}\"\n",
    },
    setup => sub {
        my $t = shift;
        write_htdigest($t->dir . '/users.htdigest', $realm, %pw);
    },
);
my $port = $t->sip_port;

my $reg_uri = "sip:127.0.0.1:$port";

# ---- REGISTER: 401, wrong password, right password
my $r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600);
is($r && $r->code, 401, 'REGISTER without credentials -> 401');
my $ch = digest_challenge($r, 'www-authenticate');
ok($ch && $ch->{realm} eq $realm && $ch->{nonce} && ($ch->{qop} // '') eq 'auth' && ($ch->{algorithm} // '') eq 'MD5',
   '401 carries WWW-Authenticate: Digest realm (AuthName), nonce, qop=auth, algorithm=MD5');
my ($f, %b) = $t->fetch('free');   # a Location with SipAuth Off needs no credentials
is($f && $f->code, 200, 'REGISTER for a user under <Location> with SipAuth Off -> 200 without credentials');

$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice', password => 'wrong',
                                                            method => 'REGISTER', uri => $reg_uri) ]);
is($r && $r->code, 401, 'wrong password -> 401');
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'mallory', password => 'x',
                                                            method => 'REGISTER', uri => $reg_uri) ]);
is($r && $r->code, 401, 'unknown user -> 401');
my $good_nc = sprintf('%08x', 100);
my $good = digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland', method => 'REGISTER',
                       uri => $reg_uri, nc => $good_nc);
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => $good ]);
is($r && $r->code, 200, 'right password -> 200');
my %bound = SipRegTest::binding_map($r);
ok($bound{'sip:alice@127.0.0.1:5101'}, 'the binding is stored');

# ---- the same nonce-count again is a replay
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5102>' ], expires => 600,
                  headers => [ Authorization => $good ]);
is($r && $r->code, 401, 'replayed nonce-count refused (401)');

# ---- alice may not register bob (nonce-counts must keep rising)
$SipDigest::NC = 0x200;
$r = $t->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5103>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland',
                                                            method => 'REGISTER', uri => $reg_uri) ]);
is($r && $r->code, 403, 'alice registering bob\'s address-of-record -> 403');

# ---- stale nonce (SipNonceLifetime 3)
sleep 3.5;
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland',
                                                            method => 'REGISTER', uri => $reg_uri) ]);
is($r && $r->code, 401, 'old nonce -> 401');
my $ch2 = digest_challenge($r, 'www-authenticate');
is($ch2 && $ch2->{stale}, 'true', '... with stale=true');
isnt($ch2 && $ch2->{nonce}, $ch->{nonce}, '... and a new nonce');

# ---- a script sees AUTH_TYPE and REMOTE_USER
{
    my $uri = "sip:whoami\@127.0.0.1:$port";
    my @x = $t->transact('udp', method => 'MESSAGE', uri => $uri, sock => $t->udp_socket);
    is(@x && $x[-1]->code, 401, 'MESSAGE to a script under SipAuth On -> 401');
    my $c = digest_challenge($x[-1], 'www-authenticate');
    @x = $t->transact('udp', method => 'MESSAGE', uri => $uri, sock => $t->udp_socket,
                      headers => [ Authorization => digest_credentials(challenge => $c, user => 'bob', password => 'builder',
                                                                method => 'MESSAGE', uri => $uri) ]);
    is(@x && $x[-1]->code, 200, 'authenticated MESSAGE reaches the script');
    is(@x && $x[-1]->header('x-auth'), 'Digest bob', 'script: AUTH_TYPE=Digest, REMOTE_USER=bob');
}

# ---- as a proxy: 407, then forwarded with Proxy-Authorization
{
    my $uas = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp') or die $!;
    my $target = 'sip:carol@127.0.0.1:' . $uas->sockport;
    my $s = $t->udp_socket;
    my @x = $t->transact('udp', method => 'MESSAGE', uri => $target, sock => $s);
    is(@x && $x[-1]->code, 407, 'request for another domain -> 407 Proxy Authentication Required');
    my $c = digest_challenge($x[-1], 'proxy-authenticate');
    ok($c && $c->{realm} eq $realm, '407 carries Proxy-Authenticate with the realm');
    my $req = $t->sip_request(method => 'MESSAGE', uri => $target, sock => $s,
                              headers => [ 'Proxy-Authorization' => digest_credentials(challenge => $c, user => 'alice',
                                                   password => 'wonderland', method => 'MESSAGE', uri => $target) ]);
    $t->udp_send($req, sock => $s);
    my $got;
    $uas->blocking(0);
    wait_until(3, sub { my $b; $uas->recv($b, 65535); $got = $b if defined $b && length $b; $got });
    like($got // '', qr/^MESSAGE \Q$target\E SIP\/2\.0/, 'authenticated request forwarded to the target');
}

ok(wait_until(3, sub { open(my $fh, '<', $t->dir . '/logs/auth.log') or return; grep { /^alice 200 "REGISTER/ } <$fh> }),
   'access log: %u is the authenticated user');
$t->stop;
done_testing;
