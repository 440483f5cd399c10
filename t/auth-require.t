#!/usr/bin/perl
# mod_authz_core's Require for SIP: ip, host, valid-user, user, RequireAll
# with "not", and <Limit INVITE>, in <Location "/user@host"> sections; the
# peer address of the SIP message is what Require ip sees.  Denied -> 403
# (with a log line); a Require that needs a user -> digest challenge even
# without SipAuth On; an authenticated user that Require refuses -> 403.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);
use SipDigest qw(digest_challenge digest_credentials write_htdigest);

my $MODDIR = '/usr/lib/apache2/modules';
my $realm = 'require.test';
my %pw = (alice => 'wonderland', bob => 'builder');

sub loc { my ($user, @body) = @_; return ("<Location \"/$user\@127.0.0.1\">", (map { "    $_" } @body), '</Location>') }

my $t = SipTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        "LoadModule authz_user_module $MODDIR/mod_authz_user.so",
        "LoadModule authz_host_module $MODDIR/mod_authz_host.so",
        loc('ipok', 'Require ip 127.0.0.1'),
        loc('ipdeny', 'Require ip 192.0.2.0/24'),
        loc('notme', '<RequireAll>', '    Require all granted', '    Require not ip 127.0.0.0/8', '</RequireAll>'),
        loc('hostok', 'Require host localhost'),
        loc('hostdeny', 'Require host sip.example.invalid'),
        loc('validuser', "AuthName \"$realm\"", 'AuthUserFile @DIR@/users.htdigest', 'Require valid-user'),
        loc('aliceonly', "AuthName \"$realm\"", 'AuthUserFile @DIR@/users.htdigest', 'Require user alice'),
        # either a local peer or a user: the address alone is enough
        loc('either', "AuthName \"$realm\"", 'AuthUserFile @DIR@/users.htdigest',
            '<RequireAny>', '    Require ip 127.0.0.1', '    Require valid-user', '</RequireAny>'),
        loc('limited', '<Limit INVITE>', '    Require ip 192.0.2.1', '</Limit>'),
        loc('carol', 'Require ip 192.0.2.0/24'),
        ''),
    scripts => {
        'default.cgi' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-User: %s\\n\\n' \"\${REMOTE_USER:-none}\"\n",
    },
    setup => sub {
        my $t = shift;
        write_htdigest($t->dir . '/users.htdigest', $realm, %pw);
    },
);
my $port = $t->sip_port;

# final response to METHOD sip:USER@127.0.0.1:port over $tr
sub final {
    my ($tr, $method, $user, @h) = @_;
    my @r = $t->transact($tr, method => $method, uri => "sip:$user\@127.0.0.1:$port",
                         sock => ($tr eq 'udp' ? $t->udp_socket : undef), headers => [@h]);
    my ($f) = grep { $_->code >= 200 } @r;
    return $f;
}
sub code { my $f = final(@_); return $f ? $f->code : 'none' }

for my $tr (qw(udp tcp)) {
    is(code($tr, 'MESSAGE', 'ipok'), 200, "$tr: Require ip 127.0.0.1 lets a local peer in");
    my $mark = $t->log_mark;
    is(code($tr, 'MESSAGE', 'ipdeny'), 403, "$tr: Require ip 192.0.2.0/24 -> 403 Forbidden");
    like($t->log_since($mark), qr/denied by Require for sip:ipdeny\@127\.0\.0\.1/,
         "$tr: the refusal is logged with the address-of-record");
    is(code($tr, 'MESSAGE', 'notme'), 403, "$tr: RequireAll with Require not ip 127.0.0.0/8 -> 403");
    is(code($tr, 'MESSAGE', 'hostok'), 200, "$tr: Require host localhost (double reverse lookup of the peer)");
    is(code($tr, 'MESSAGE', 'hostdeny'), 403, "$tr: Require host of another name -> 403");
    is(code($tr, 'MESSAGE', 'either'), 200, "$tr: RequireAny ip|valid-user: the local address is enough");
}

# <Limit INVITE>: only INVITE is restricted
is(code('udp', 'INVITE', 'limited'), 403, '<Limit INVITE> Require ip 192.0.2.1: INVITE -> 403');
is(code('udp', 'MESSAGE', 'limited'), 200, '<Limit INVITE>: MESSAGE is not restricted');

# Require valid-user without SipAuth On: a challenge, then the user
{
    my $f = final('udp', 'MESSAGE', 'validuser');
    is($f && $f->code, 401, 'Require valid-user -> 401 without credentials (no SipAuth needed)');
    my $c = digest_challenge($f);
    is($c && $c->{realm}, $realm, '... realm from AuthName');
    my $uri = "sip:validuser\@127.0.0.1:$port";
    $f = final('udp', 'MESSAGE', 'validuser', Authorization => digest_credentials(challenge => $c, user => 'bob', password => $pw{bob}, method => 'MESSAGE', uri => $uri));
    is($f && $f->code, 200, 'valid-user: bob authenticated -> reaches the script');
    is($f && $f->header('x-user'), 'bob', '... REMOTE_USER=bob');
}

# Require user alice: bob authenticates but is refused; alice gets in
{
    my $uri = "sip:aliceonly\@127.0.0.1:$port";
    my $f = final('tcp', 'MESSAGE', 'aliceonly');
    is($f && $f->code, 401, 'Require user alice -> 401 first');
    my $c = digest_challenge($f);
    my $mark = $t->log_mark;
    $f = final('tcp', 'MESSAGE', 'aliceonly', Authorization => digest_credentials(challenge => $c, user => 'bob', password => $pw{bob}, method => 'MESSAGE', uri => $uri));
    is($f && $f->code, 403, 'bob (right password) refused by Require user alice -> 403');
    like($t->log_since($mark), qr/bob denied by Require/, '... logged with the user name');
    $f = final('tcp', 'MESSAGE', 'aliceonly', Authorization => digest_credentials(challenge => $c, user => 'alice', password => $pw{alice}, method => 'MESSAGE', uri => $uri));
    is($f && $f->code, 200, 'alice -> 200');
    is($f && $f->header('x-user'), 'alice', '... REMOTE_USER=alice');
}

# REGISTER is checked against the To address-of-record's <Location>
{
    my $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port",
                              to => "<sip:carol\@127.0.0.1:$port>", from => "<sip:carol\@127.0.0.1:$port>;tag=r1",
                              headers => [ Contact => '<sip:carol@127.0.0.1:5999>', Expires => 60 ]);
    my @r = $t->udp_req($raw, 3, sock => $t->udp_socket);
    is(@r && $r[-1]->code, 403, 'REGISTER for an AoR whose <Location> denies the peer -> 403');
    $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port",
                           to => "<sip:dave\@127.0.0.1:$port>", from => "<sip:dave\@127.0.0.1:$port>;tag=r2",
                           headers => [ Contact => '<sip:dave@127.0.0.1:5998>', Expires => 60 ]);
    @r = $t->udp_req($raw, 3, sock => $t->udp_socket);
    is(@r && $r[-1]->code, 200, 'REGISTER for an AoR without restrictions -> 200');
}

# ACK and CANCEL are never challenged or refused (RFC 3261 §22.1): a CANCEL
# to a denied AoR matching nothing is answered 481, not 403
is(code('udp', 'CANCEL', 'ipdeny'), 481, 'CANCEL under a denying Require -> 481 (not 403)');

$t->stop;
done_testing();
