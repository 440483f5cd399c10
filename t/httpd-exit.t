#!/usr/bin/perl
# httpd with mod_sip ends cleanly: run in the foreground (so that its exit
# status is ours to read), serve, restart gracefully, then stop on SIGTERM;
# it must exit 0, not die of a signal.  httpd unloads the module when it
# clears pconf, before it destroys the process pool: a cleanup the module
# left on the process pool was then called at an address no longer mapped
# (SIGSEGV at the very end of every stop, after the last log line, which
# no test looking at the log or at SIP could see).
use strict;
use warnings;
use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use SipTest qw(wait_until);

for my $engines (1, 2) {
    my $t = SipTest->new(start => 0, server_conf => "SipEngines $engines\n");
    $t->write_conf;
    my $pid = $t->spawn_apache($t->dir . '/fg.out', '-DFOREGROUND');
    ok(wait_until(30, sub { $t->options_ok('udp') }, 0.2), "$engines engine(s): serving in the foreground");
    kill 'USR1', $pid;              # graceful restart: pconf cleared, the module loaded again
    sleep 1;
    ok(wait_until(30, sub { $t->options_ok('udp') }, 0.2), "$engines engine(s): serving after a graceful restart");
    kill 'TERM', $pid;
    my $done = wait_until(30, sub { waitpid($pid, WNOHANG) == $pid }, 0.1);
    my $st = $?;
    ok($done, "$engines engine(s): httpd stopped on SIGTERM");
    is($done ? ($st & 127) : -1, 0, "$engines engine(s): httpd did not die of a signal")
        or diag("signal " . ($st & 127) . "\n" . $t->_log_tail);
    is($done ? ($st >> 8) : -1, 0, "$engines engine(s): httpd exited 0");
    unless ($done) { kill 'KILL', $pid; waitpid($pid, 0) }
}
done_testing;
