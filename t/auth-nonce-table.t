#!/usr/bin/perl
# SipNonceCounts: the table of highest digest nonce-counts (sip_nonce.c).
#   - full (SipNonceCounts 16: one group of 16 nonces): a new nonce is
#     answered with a new challenge with stale=true, a warning and
#     SipNonceTableFull, and the counts already kept still refuse replays;
#   - a graceful restart with a larger table keeps those counts, and the
#     nonce refused for want of room is accepted;
#   - kill -9 of the engine: the restarted engine still refuses a replay.
use strict;
use warnings;
use Test::More;
use SipTest qw(wait_until);
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'table.test';
my $whoami = "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-User: %s\\n\\n' \"\${REMOTE_USER:-none}\"\n";
my @status = ("LoadModule status_module $SipTest::MODDIR/mod_status.so",
              '<Location /server-status>', '    SetHandler server-status', '</Location>');
my $t = SipTest->new(digest_server(realm => $realm, users => { alice => 'wonderland' },
                                   conf => [ @status, 'SipNonceCounts 16' ],
                                   scripts => { 'whoami@127.0.0.1' => $whoami }));
my $port = $t->sip_port;
my $uri = "sip:whoami\@127.0.0.1:$port";

sub message {
    my ($auth) = @_;
    my $s = $t->udp_socket;
    my @r = $t->udp_req($t->sip_request(method => 'MESSAGE', uri => $uri, sock => $s,
                                        headers => [ $auth ? (Authorization => $auth) : () ],
                                        content_type => 'text/plain', body => 'hi'), 5, sock => $s);
    return @r && $r[-1]->code >= 200 ? $r[-1] : undef;
}

sub credentials {
    my ($ch) = @_;
    return digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland',
                              method => 'MESSAGE', uri => $uri, nc => '00000001');
}

sub new_nonce { return digest_challenge(message(), 'www-authenticate') }

# ---- 16 nonces fill the table; the 17th is challenged again (stale)
my (@auth, $ok);
for my $i (1 .. 16) {
    my $ch = new_nonce() or BAIL_OUT('no challenge');
    push @auth, credentials($ch);
    my $r = message($auth[-1]);
    $ok++ if $r && $r->code == 200;
}
is($ok, 16, '16 nonces used once each: 200');
my $mark = $t->log_mark;
my $ch17 = new_nonce();
my $auth17 = credentials($ch17);
my $r = message($auth17);
my $again = digest_challenge($r, 'www-authenticate');
is($r && $r->code, 401, 'a 17th nonce with SipNonceCounts 16: 401');
ok($again && $again->{nonce} ne $ch17->{nonce} && ($again->{stale} // '') eq 'true',
   '... with a new nonce and stale=true');
ok($t->wait_log($mark, qr/no room for the count of a new nonce \(16 slots, SipNonceCounts\)/, 5),
   '... and a warning in the error log');
is($t->sip_counters->{SipNonceTableFull}, 1, 'SipNonceTableFull: 1');
$r = message($auth[0]);
is($r && $r->code, 401, 'a replay of the first nonce is still refused');
ok(!($r && ($r->header('www-authenticate') // '') =~ /stale=true/), '... not as stale');

# ---- graceful restart with room: the counts go on, the 17th fits
$t->{server_conf} =~ s/SipNonceCounts 16/SipNonceCounts 64/;
$t->write_conf;
my @old = $t->engine_pids;
ok($t->apachectl('graceful'), 'graceful restart with SipNonceCounts 64');
ok(wait_until(15, sub { my @n = $t->engine_pids; $n[0] && $n[0] != $old[0] && kill(0, $n[0]) }, 0.2),
   'a new engine');
wait_until(5, sub { my $m = message(); $m && $m->code == 401 }, 0.2);
$r = message($auth[0]);
is($r && $r->code, 401, 'the first nonce\'s replay is refused after the graceful restart');
$r = message($auth[15]);
is($r && $r->code, 401, '... and the 16th\'s');
$r = message($auth17);
is($r && $r->code, 200, 'the 17th nonce, refused for want of room, is accepted now');

# ---- kill -9: the restarted engine remembers
{
    my ($victim, $new) = $t->kill_engine(0);
    ok($new, 'kill -9 engine 0 (pid ' . ($victim // '?') . '): restarted');
    wait_until(5, sub { my $m = message(); $m && $m->code == 401 }, 0.2);
    $r = message($auth17);
    is($r && $r->code, 401, 'a replay after the restart is refused');
    ok($t->sip_counters->{SipAuthReplays} >= 4, 'SipAuthReplays counts the replays');
}

$t->stop;
done_testing;
