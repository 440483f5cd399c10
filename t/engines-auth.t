#!/usr/bin/perl
# Digest nonces with several engines (SipEngines 2, issue 19): every engine
# signs nonces with one key made by the parent (sip_auth_set_secret), so
#   - one challenge answered from several source ports (the kernel spreads
#     them between the engines, SO_REUSEPORT) is accepted at each engine;
#   - a challenge issued before kill -9 of the engine that made it is
#     accepted by the restarted engine, and by the other one;
#   - a graceful restart keeps the key (the parent's process pool).
# The engine that answered is read from the To tag of its response
# ("mS<mark>", sip_handover.h).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg wait_until rand_token);
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'engines.test';
my $whoami = "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-User: %s\\n\\n' \"\${REMOTE_USER:-none}\"\n";
my $t = SipTest->new(digest_server(realm => $realm, users => { alice => 'wonderland' },
                                   conf => [ 'SipEngines 2' ],
                                   scripts => { 'whoami@127.0.0.1' => $whoami }));
my $port = $t->sip_port;
my $uri = "sip:whoami\@127.0.0.1:$port";

# One MESSAGE from socket $s (with credentials when given); its final response.
sub message {
    my ($s, $auth, $cseq) = @_;
    my $raw = $t->sip_request(method => 'MESSAGE', uri => $uri, sock => $s, cseq => $cseq // 1,
                              from => '<sip:alice@127.0.0.1>;tag=' . rand_token(6),
                              headers => [ $auth ? (Authorization => $auth) : () ],
                              content_type => 'text/plain', body => 'hi');
    $t->udp_send($raw, sock => $s);
    my $end = time + 5;
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($s, $left) // return undef;
        my $m = parse_msg($d);
        return $m if $m->is_response && $m->code >= 200;
    }
    return undef;
}

sub mark_of { my ($m) = @_; my ($k) = ($m ? $m->header('to') // '' : '') =~ /;tag=mS(\w)/; return $k }

sub challenge {
    my $s = $t->udp_socket;
    my $r = message($s);
    return ($s, $r, digest_challenge($r, 'www-authenticate'));
}

sub answer {
    my ($s, $ch) = @_;
    return message($s, digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland',
                                          method => 'MESSAGE', uri => $uri));
}

# ---- one challenge, answered from new source ports until both engines took one
{
    my ($s, $r, $ch) = challenge();
    is($r && $r->code, 401, 'MESSAGE without credentials: 401');
    ok($ch && $ch->{nonce}, '... with a nonce') or BAIL_OUT('no challenge');
    my (%marks, $ok, $sent);
    for my $i (1 .. 24) {
        my $a = answer($t->udp_socket, $ch);
        $sent++;
        $ok++ if $a && $a->code == 200 && ($a->header('x-user') // '') eq 'alice';
        $marks{ mark_of($a) // '?' }++;
        last if $i >= 4 && $marks{0} && $marks{1};
    }
    is($ok, $sent, "one challenge answered from $sent source ports: 200 (as alice) each");
    ok($marks{0} && $marks{1}, 'both engines accepted it (To tag marks: '
                               . join(',', map { "$_=$marks{$_}" } sort keys %marks) . ')');
}

# ---- a challenge made before kill -9 of its engine, answered after the restart
{
    my ($s, $r, $ch) = challenge();
    my $m = mark_of($r);
    ok(defined $m && $m =~ /^[01]$/, 'the challenge names its engine (' . ($m // 'none') . ')');
    $m //= 0;
    my ($victim, $new) = $t->kill_engine($m);
    ok($new, "kill -9 engine $m (pid " . ($victim // '?') . '): restarted');
    # the same source port reaches the restarted engine (its socket is the
    # parent's, kept across the restart); a retry covers its first moments
    my $a;
    wait_until(5, sub { $a = answer($s, $ch); $a && $a->code == 200 }, 0.2);
    is($a && $a->code, 200, 'the answer to the earlier challenge is accepted after the restart');
    is(mark_of($a), $m, '... by the restarted engine itself');
    my %marks;
    for my $i (1 .. 16) {
        my $b = answer($t->udp_socket, $ch);
        $marks{ mark_of($b) // '?' }++ if $b && $b->code == 200;
        last if $marks{0} && $marks{1};
    }
    ok($marks{0} && $marks{1}, '... and by both engines from other ports');
}

# ---- graceful restart: new engines, the same key
{
    my ($s, $r, $ch) = challenge();
    my @old = $t->engine_pids;
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    my @new;
    ok(wait_until(15, sub { @new = $t->engine_pids;
                            @new == 2 && $new[0] && $new[1] && $new[0] != $old[0] && $new[1] != $old[1] }, 0.2),
       'two new engines');
    my $a;
    wait_until(5, sub { $a = answer($s, $ch); $a && $a->code == 200 }, 0.2);
    is($a && $a->code, 200, 'a challenge made before the graceful restart is accepted after it');
}

$t->stop;
done_testing;
