#!/usr/bin/perl
# SipFastCGI workers do not outlive their engine (docs/fastcgi.md, "When an
# engine dies"): an engine killed with SIGKILL takes its workers with it
# (PR_SET_PDEATHSIG), and what escapes that -- here the child of a wrapper
# that does not exec, which never had the signal set, as a worker of a
# set-user-ID program would not -- is killed by the engine restarted in
# its place (its predecessor's process groups, from the state file); the
# new engine's own workers answer.  A real set-user-ID worker (a program
# owned by nobody, mode 4755, that runs the Python worker with nobody's
# effective id: Linux clears the death signal on that exec) is swept the
# same way.  26 workers
# of crashed engines were once found running hours later.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use File::Copy ();
use SipTest qw(parse_msg wait_until);

my $repo = SipTest->repo;
my $t = SipTest->new(
    start => 0,
    vhost_conf => <<'EOC',
SipFastCGI @SCRIPTS@/orph.py 2 2
SipFastCGI @SCRIPTS@/wrap.sh 1 1
SipFastCGI @SCRIPTS@/suid-worker 1 1
EOC
);
my $sd = $t->scripts_dir;
my $nobody = getpwnam('nobody');
BAIL_OUT('this test needs root (to make a set-user-ID program) and a user nobody')
    unless $> == 0 && defined $nobody;
File::Copy::copy("$repo/sip-cgi-bin/sipfcgi.py", "$sd/sipfcgi.py") or die $!;
chmod 0644, "$sd/sipfcgi.py";
File::Copy::copy("$repo/t/fcgi/behave.py", "$sd/$_") or die $! for qw(orph.py wrapped.py);
chmod 0755, "$sd/orph.py", "$sd/wrapped.py";
# the shell stays the worker's process (no exec): SIGTERM ends it, not
# its child, which holds the listening socket and serves
$t->write_script('wrap.sh', text => "#!/bin/sh\n$sd/wrapped.py\nexit \$?\n");
chmod 0755, "$sd/wrap.sh";
$t->write_script("fine\@127.0.0.1", symlink => 'orph.py');
$t->write_script("wrapped\@127.0.0.1", symlink => 'wrap.sh');
# set-user-ID nobody: the effective and saved ids are nobody's, the real
# one stays the engine's (so the engine may signal it); the worker is
# executed in the same process
File::Copy::copy("$repo/t/fcgi/behave.py", "$sd/suidpy.py") or die $!;
chmod 0755, "$sd/suidpy.py";
open(my $cf, '>', "$sd/suid.c") or die $!;
print $cf <<"EOS";
#define _GNU_SOURCE
#include <unistd.h>
int main(int argc, char **argv)
{
    (void)argc;
    argv[0] = "$sd/suidpy.py";
    execv(argv[0], argv);
    return 112;
}
EOS
close $cf;
system('cc', '-o', "$sd/suid-worker", "$sd/suid.c") == 0 or BAIL_OUT('cannot compile suid.c');
chown $nobody, -1, "$sd/suid-worker" or die $!;
chmod 04755, "$sd/suid-worker" or die $!;
# nobody reads the worker and sipfcgi.py on the way down
for (my $d = $sd; $d ne '/' && $d ne ''; $d =~ s{/[^/]*$}{}) {
    chmod((stat $d)[2] & 07777 | 0711, $d);
}
$t->write_script("suid\@127.0.0.1", symlink => 'suid-worker');
$t->start;
my $port = $t->sip_port;

sub ppid_of {
    my ($pid) = @_;
    my ($p) = grep { $_->{pid} == $pid } SipTest::procs();
    return $p ? $p->{ppid} : 0;
}
# The workers of 'engine' (its children running 'prog'), and their children.
sub workers_of {
    my ($engine, $prog) = @_;
    return map { $_->{pid} } grep { $_->{ppid} == $engine } $t->procs_matching("$sd/$prog");
}
sub children_of {
    my ($pid, $prog) = @_;
    return map { $_->{pid} } grep { $_->{ppid} == $pid } $t->procs_matching("$sd/$prog");
}
# The pid of the worker that answers a call sent to engine 0 (SipEngines 2:
# from a socket that reaches it), if its parent is 'parent'.
sub answered_by {
    my ($user, $parent) = @_;
    my $s = $t->udp_socket_to_engine(0) or return 0;
    for (1 .. 40) {
        my @rs = $t->udp_req($t->sip_request(method => 'MESSAGE', sock => $s,
                                             uri => "sip:$user\@127.0.0.1:$port"), 4, sock => $s);
        my $pid = @rs ? $rs[-1]->header('x-worker-pid') // 0 : 0;
        return $pid if $pid && ppid_of($pid) == $parent;
        sleep 0.1;
    }
    return 0;
}

sub euid_of {
    my ($pid) = @_;
    open(my $fh, '<', "/proc/$pid/status") or return -1;
    my ($uid) = map { /^Uid:\s+\d+\s+(\d+)/ ? $1 : () } <$fh>;
    return $uid // -1;
}

my $engine = $t->engine_pid;
my (@orph, @sh, @py, @su);
ok(wait_until(10, sub {
    @orph = workers_of($engine, 'orph.py');
    @sh = workers_of($engine, 'wrap.sh');
    @py = @sh ? children_of($sh[0], 'wrapped.py') : ();
    @su = workers_of($engine, 'suidpy.py');
    @orph == 2 && @sh == 1 && @py == 1 && @su == 1
}, 0.1), "engine $engine started its workers (orph.py @orph, wrap.sh @sh with wrapped.py @py, "
         . "suid-worker @su)");
ok(answered_by('fine', $engine), 'a worker answers');
ok(answered_by('wrapped', $sh[0]), "the wrapped worker answers");
is(@su && euid_of($su[0]), $nobody, 'the set-user-ID worker runs as nobody');
ok(answered_by('suid', $engine), '... and answers');

my $mark = $t->log_mark;
kill 'KILL', $engine;
my $new = wait_until(10, sub { my $p = $t->engine_pid; $p && $p != $engine ? $p : 0 }, 0.1);
ok($new, "the engine killed with SIGKILL was restarted ($new)");
my @all = (@orph, @sh, @py, @su);
my @alive;
ok(wait_until(5, sub { @alive = grep { kill(0, $_) && ppid_of($_) } @all; !@alive }, 0.1),
   "no worker of the killed engine left within 5 s (@all)") or diag("alive: @alive");
my ($groups) = $t->log_since($mark) =~ /sip-fcgi: killed (\d+) worker process groups? left by the previous engine/;
cmp_ok($groups // 0, '>=', 2, "the new engine killed what its predecessor's workers left "
       . "(the wrapper's child and the set-user-ID worker: " . ($groups // 'no') . ' groups)');
my (@orph2, @sh2, @su2);
ok(wait_until(10, sub {
    @orph2 = workers_of($new, 'orph.py');
    @sh2 = workers_of($new, 'wrap.sh');
    @su2 = workers_of($new, 'suidpy.py');
    @orph2 == 2 && @sh2 == 1 && @su2 == 1
}, 0.1), "the new engine started its own workers (@orph2, @sh2, @su2)");
ok(answered_by('fine', $new), "the new engine's worker answers");
ok(answered_by('wrapped', $sh2[0]), "... and its wrapped worker");
ok(answered_by('suid', $new), "... and its set-user-ID worker");

$t->stop;
ok(!$t->procs_matching("$sd/"), 'no worker after stop');
done_testing;
