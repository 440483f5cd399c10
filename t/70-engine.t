#!/usr/bin/perl
# The SIP engine process: pid file, restart after a crash, graceful restart
# without losing UDP requests, clean stop.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use SipTest qw(parse_msg wait_until procs);

my $t = SipTest->new(scripts => {
    'hang@127.0.0.1' => "#!/bin/sh\n/bin/sleep 30.7777\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
});
my $port = $t->sip_port;

# ---- pid file
my $httpd = $t->httpd_pid;
ok(-f $t->engine_pidfile, 'engine pid file exists in DefaultRuntimeDir');
my $engine = $t->engine_pid;
ok($engine, 'engine pid file names a live process');
my ($ep) = grep { $_->{pid} == ($engine // -1) } procs();
is($ep && $ep->{ppid}, $httpd, 'engine is a child of the httpd parent');
like($ep ? $ep->{cmd} : '', qr/apache2/, 'engine runs the httpd binary');

# ---- engine killed -> restarted
{
    my $t0 = time;
    kill 'KILL', $engine;
    my $new = wait_until(5, sub { my $p = $t->engine_pid; $p && $p != $engine ? $p : 0 }, 0.1);
    ok($new, sprintf('new engine pid after kill -9 (%s, %.1f s)', $new || 'none', time - $t0));
    my $ok = wait_until(5 - (time - $t0) > 0.5 ? 5 - (time - $t0) : 0.5,
                        sub { $t->options_ok('udp') && $t->options_ok('tcp') }, 0.2);
    ok($ok, sprintf('OPTIONS over UDP and TCP work again within 5 s of the kill (%.1f s)', time - $t0));
    ok(wait_until(2, sub { !(grep { $_->{pid} == $engine } procs()) }, 0.1), 'killed engine reaped (no zombie)');
    is($t->httpd_pid, $httpd, 'httpd parent unaffected');
    $engine = $new;
}

# ---- graceful restart: no UDP request lost (one retransmission allowed)
{
    my $graceful_pid = fork;
    die "fork: $!" unless defined $graceful_pid;
    if (!$graceful_pid) {
        sleep 0.5;
        SipTest::exec_apache($t->conf_file, '-k', 'graceful');
        POSIX::_exit(127);
    }
    my (@sock, @req, @ans);
    my $sel = IO::Select->new;
    my $collect = sub {
        my ($dur) = @_;
        my $end = time + $dur;
        while ((my $left = $end - time) > 0) {
            my @r = $sel->can_read($left) or last;
            for my $s (@r) {
                my $i = ${*$s}{idx};
                my $d;
                recv($s, $d, 70000, 0);
                $ans[$i] = parse_msg($d) if defined $d && !$ans[$i];
            }
        }
    };
    for my $i (0 .. 29) {
        my $s = $t->udp_socket;
        ${*$s}{idx} = $i;
        $sock[$i] = $s;
        $sel->add($s);
        $req[$i] = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:g$i\@127.0.0.1:$port");
        $t->udp_send($req[$i], sock => $s);
        $collect->(0.1);
    }
    waitpid($graceful_pid, 0);
    is($?, 0, 'apache2 -k graceful succeeded');
    $collect->(1);
    my @missing = grep { !$ans[$_] } 0 .. 29;
    for my $i (@missing) { $t->udp_send($req[$i], sock => $sock[$i]) }
    $collect->(1.5);
    my @lost = grep { !$ans[$_] } 0 .. 29;
    is(scalar(@lost), 0, 'every OPTIONS during the graceful restart answered (at most one retransmission)')
        or diag("unanswered: @lost; needed a retransmission: @missing");
    my @bad = grep { $ans[$_] && $ans[$_]->code != 200 } 0 .. 29;
    is(scalar(@bad), 0, 'all answers during the restart are 200');
    diag(scalar(@missing) . " request(s) needed a retransmission") if @missing;

    ok(wait_until(3, sub { $t->engine_pid }, 0.1), 'engine running after graceful');
    is($t->httpd_pid, $httpd, 'httpd parent pid unchanged by graceful');
    ok($t->options_ok('udp'), 'OPTIONS over UDP after graceful');
    ok($t->options_ok('tcp'), 'OPTIONS over TCP after graceful');
    $engine = $t->engine_pid;
}

# ---- stop with a script still running
{
    my $s = $t->udp_socket;
    $t->udp_send($t->sip_request(method => 'MESSAGE', sock => $s, uri => "sip:hang\@127.0.0.1:$port"), sock => $s);
    ok(wait_until(3, sub { scalar $t->procs_matching('sleep 30.7777') }, 0.1), 'hanging script is running');
    $t->stop;
    ok(!($engine && kill(0, $engine) && !(grep { $_->{pid} == $engine && $_->{stat} eq 'Z' } procs())),
       'engine process gone after stop');
    my @left;
    wait_until(3, sub { @left = $t->procs_matching('sleep 30.7777'); !@left }, 0.1);
    ok(!@left, 'no script process (nor its children) left after stop');
    my $u = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'udp');
    ok($u, "UDP port $port free after stop") or diag("bind: $!");
    my $tc = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
                                   Listen => 1, ReuseAddr => 1);
    ok($tc, "TCP port $port free after stop") or diag("bind: $!");
}

done_testing;
