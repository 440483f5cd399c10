#!/usr/bin/perl
# Digest done strictly (issue 10 item 3) and the way real phones answer
# challenges (issue 11): qop=auth required unless SipAuthQop optional, so
# one Authorization cannot be replayed for other Contacts or Call-IDs; the
# digest uri must be the Request-URI (RFC 2617 §3.2.2.5); a 401 answered
# with Proxy-Authorization, or a 407 answered with Authorization, is
# accepted for our own realm.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use SipTest qw(parse_msg wait_until);
use SipRegTest;
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'strict.test';
my %pw = (alice => 'wonderland', bob => 'builder');

sub server {
    my (%o) = @_;
    return SipRegTest->new(digest_server(
        realm => $realm, users => \%pw, vhost_conf => $o{vhost_conf} // '',
        scripts => { 'echo@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-User: %s\\n\\n' \"\$REMOTE_USER\"\n" }));
}

my $t = server();
my $port = $t->sip_port;
my $reg_uri = "sip:127.0.0.1:$port";

my $r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600);
is($r && $r->code, 401, 'REGISTER without credentials -> 401');
my $ch = digest_challenge($r, 'www-authenticate');

# ---- credentials without qop: replayable, so refused by default
my $legacy = digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland', method => 'REGISTER',
                                uri => $reg_uri, qop => 'none');
my $mark = $t->log_mark;
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => $legacy ]);
is($r && $r->code, 401, 'right password but no qop -> 401 (SipAuthQop required)');
ok(wait_until(3, sub { grep { /without qop/ } $t->log_since($mark) }), '... logged');

# ---- the digest uri must name this request
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice',
                               password => 'wonderland', method => 'REGISTER', uri => "sip:elsewhere.example") ]);
is($r && $r->code, 400, 'digest uri is not the Request-URI -> 400 (RFC 2617 §3.2.2.5)');
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5101>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice',
                               password => 'wonderland', method => 'REGISTER', uri => $reg_uri) ]);
is($r && $r->code, 200, 'with qop and the right uri -> 200');

# ---- one Authorization binds one request: not another Contact or Call-ID
my $once = digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland', method => 'REGISTER',
                              uri => $reg_uri);
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:5102>' ], expires => 600,
                  headers => [ Authorization => $once ]);
is($r && $r->code, 200, 'fresh credentials -> 200');
$r = $t->register(user => 'alice', contacts => [ '<sip:alice@127.0.0.1:6666>' ], expires => 600,
                  headers => [ Authorization => $once ]);
is($r && $r->code, 401, 'the same Authorization for another Contact and Call-ID -> 401');
my ($f) = $t->fetch('alice', headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice',
                       password => 'wonderland', method => 'REGISTER', uri => $reg_uri) ]);
my %b = SipRegTest::binding_map($f);
ok(!$b{'sip:alice@127.0.0.1:6666'}, '... and the replayed Contact was not bound');

# ---- the header a phone prefers: either one for our realm
{
    my $uri = "sip:echo\@127.0.0.1:$port";
    my @x = $t->transact('udp', method => 'MESSAGE', uri => $uri);
    is(@x && $x[-1]->code, 401, 'MESSAGE to a local script -> 401');
    my $c = digest_challenge($x[-1], 'www-authenticate');
    @x = $t->transact('udp', method => 'MESSAGE', uri => $uri,
                      headers => [ 'Proxy-Authorization' => digest_credentials(challenge => $c, user => 'bob',
                                   password => 'builder', method => 'MESSAGE', uri => $uri) ]);
    is(@x && $x[-1]->code, 200, '401 answered with Proxy-Authorization -> accepted');
    is(@x && $x[-1]->header('x-user'), 'bob', '... as bob');

    my $uas = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp') or die $!;
    my $target = 'sip:carol@127.0.0.1:' . $uas->sockport;
    @x = $t->transact('udp', method => 'MESSAGE', uri => $target);
    is(@x && $x[-1]->code, 407, 'MESSAGE for another host -> 407');
    $c = digest_challenge($x[-1], 'proxy-authenticate');
    my $req = $t->sip_request(method => 'MESSAGE', uri => $target,
                              headers => [ Authorization => digest_credentials(challenge => $c, user => 'bob',
                                           password => 'builder', method => 'MESSAGE', uri => $target) ]);
    $t->udp_send($req);
    my $got;
    $uas->blocking(0);
    wait_until(3, sub { my $b; $uas->recv($b, 65535); $got = $b if defined $b && length $b; $got });
    like($got // '', qr/^MESSAGE \Q$target\E SIP\/2\.0/, '407 answered with Authorization -> relayed');

    # credentials for another realm in the other header do not count
    @x = $t->transact('udp', method => 'MESSAGE', uri => $target,
                      headers => [ Authorization => digest_credentials(challenge => { %$c, realm => 'other' },
                                   user => 'bob', password => 'builder', method => 'MESSAGE', uri => $target) ]);
    is(@x && $x[-1]->code, 407, 'Authorization for another realm -> 407 still');
}
$t->stop;

# ---- SipAuthQop optional lets RFC 2069 clients in
$t = server(vhost_conf => 'SipAuthQop optional');
$port = $t->sip_port;
$reg_uri = "sip:127.0.0.1:$port";
$r = $t->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5201>' ], expires => 600);
$ch = digest_challenge($r, 'www-authenticate');
$r = $t->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5201>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'bob', password => 'builder',
                                                                   method => 'REGISTER', uri => $reg_uri, qop => 'none') ]);
is($r && $r->code, 200, 'SipAuthQop optional: credentials without qop -> 200');
$r = $t->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5201>' ], expires => 600,
                  headers => [ Authorization => digest_credentials(challenge => $ch, user => 'bob', password => 'nope',
                                                                   method => 'REGISTER', uri => $reg_uri, qop => 'none') ]);
is($r && $r->code, 401, '... a wrong password still -> 401');
$t->stop;

done_testing;
