#!/usr/bin/perl
# Digest nonce-counts with several engines (SipEngines 2): the highest
# nonce-count of a nonce is kept in a table the parent shares with every
# engine (sip_nonce.c), so a request accepted once (qop=auth, nc=00000001)
# and captured cannot be replayed at the other engine, nor at an engine
# restarted (kill -9) since: RFC 2617 §3.2.2.1, RFC 7616 §3.4.
# The replay is a new request (new branch, Call-ID, tag) with the same
# Authorization header, sent from new source ports until both engines
# answered one (the kernel spreads source ports, SO_REUSEPORT); the engine
# that answered is read from the To tag of its response ("mS<mark>").
use strict;
use warnings;
use Test::More;
use SipTest qw(wait_until);
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'replay.test';
my $whoami = "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-User: %s\\n\\n' \"\${REMOTE_USER:-none}\"\n";
my $t = SipTest->new(digest_server(realm => $realm, users => { alice => 'wonderland' },
                                   conf => [ 'SipEngines 2',
                                             "LoadModule status_module $SipTest::MODDIR/mod_status.so",
                                             '<Location /server-status>', '    SetHandler server-status',
                                             '</Location>' ],
                                   scripts => { 'whoami@127.0.0.1' => $whoami }));
my $port = $t->sip_port;
my $uri = "sip:whoami\@127.0.0.1:$port";

# One MESSAGE from socket $s (with Authorization $auth when given); its
# final response.
sub message {
    my ($s, $auth) = @_;
    my @r = $t->udp_req($t->sip_request(method => 'MESSAGE', uri => $uri, sock => $s,
                                        headers => [ $auth ? (Authorization => $auth) : () ],
                                        content_type => 'text/plain', body => 'hi'), 5, sock => $s);
    return @r && $r[-1]->code >= 200 ? $r[-1] : undef;
}

sub mark_of { my ($m) = @_; my ($k) = ($m ? $m->header('to') // '' : '') =~ /;tag=mS(\w)/; return $k }

sub credentials {
    my ($ch, $nc) = @_;
    return digest_credentials(challenge => $ch, user => 'alice', password => 'wonderland',
                              method => 'MESSAGE', uri => $uri, nc => $nc);
}

# A fresh nonce, and credentials for it with nc=00000001 accepted once;
# the engine that accepted them.
sub accepted_once {
    my $r = message($t->udp_socket);
    my $ch = digest_challenge($r, 'www-authenticate') or BAIL_OUT('no challenge');
    my $auth = credentials($ch, '00000001');
    my $a = message($t->udp_socket, $auth);
    is($a && $a->code, 200, 'credentials with nc=00000001: 200')
        or diag($a ? $a->code : 'no answer');
    is($a && $a->header('x-user'), 'alice', '... as alice');
    return ($ch, $auth, mark_of($a));
}

# Replay $auth from new source ports until both engines answered (at most
# 24 ports); every answer must be a new challenge.
sub replay_everywhere {
    my ($auth, $ch, $what) = @_;
    my (%refused, %accepted, @other);
    for my $i (1 .. 24) {
        my $r = message($t->udp_socket, $auth);
        my $m = mark_of($r) // '?';
        my $again = digest_challenge($r, 'www-authenticate');
        if ($r && $r->code == 401 && $again && $again->{nonce} ne $ch->{nonce}) {
            $refused{$m}++;
        }
        elsif ($r && $r->code == 200) {
            $accepted{$m}++;
        }
        else {
            push @other, $r ? $r->code : 'none';
        }
        last if $i >= 4 && ($refused{0} || $accepted{0}) && ($refused{1} || $accepted{1});
    }
    my $show = sub { my %h = @_; join(',', map { "$_=$h{$_}" } sort keys %h) || 'none' };
    ok(!%accepted && !@other, "$what: every replay refused with a new challenge (accepted at "
                              . $show->(%accepted) . '; other answers: ' . (join(',', @other) || 'none') . ')');
    ok($refused{0} && $refused{1}, "$what: ... by both engines (refused at " . $show->(%refused) . ')');
}

# ---- accepted at one engine, replayed at both
{
    my ($ch, $auth, $m) = accepted_once();
    ok(defined $m && $m =~ /^[01]$/, 'the 200 names its engine (' . ($m // 'none') . ')');
    replay_everywhere($auth, $ch, 'two engines');
    # the client itself goes on with a higher count, at either engine
    my %marks;
    for my $i (1 .. 16) {
        my $a = message($t->udp_socket, credentials($ch, sprintf('%08x', 1 + $i)));
        $marks{ mark_of($a) // '?' }++ if $a && $a->code == 200;
        last if $marks{0} && $marks{1};
    }
    ok($marks{0} && $marks{1}, 'higher nonce-counts of the same nonce are accepted at both engines');
}

# ---- accepted, then kill -9 of the engine that accepted it
{
    my ($ch, $auth, $m) = accepted_once();
    $m = 0 unless defined $m && $m =~ /^[01]$/;
    my ($victim, $new) = $t->kill_engine($m);
    ok($new, "kill -9 engine $m (pid " . ($victim // '?') . '): restarted');
    # let the restarted engine take its share of the source ports
    my $up;
    wait_until(10, sub { my $r = message($t->udp_socket); $up = $r && mark_of($r) eq $m }, 0.2);
    ok($up, "the restarted engine $m answers");
    replay_everywhere($auth, $ch, 'after the restart');
}

# ---- mod_status counts the replays
{
    my $n = $t->sip_counters->{SipAuthReplays};
    ok(defined $n && $n >= 4, 'SipAuthReplays counts them (' . ($n // 'none') . ')');
}

$t->stop;
done_testing;
