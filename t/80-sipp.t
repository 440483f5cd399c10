#!/usr/bin/perl
# Interoperability with SIPp (Debian package sip-tester) as UAC, over UDP
# (-t u1) and TCP (-t t1).  Scenarios are in t/sipp/.
use strict;
use warnings;
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use SipTest qw(free_port);

my $SIPP = $ENV{SIPP} || '/usr/bin/sipp';
unless (-x $SIPP) {
    fail("sipp available at $SIPP (install Debian package sip-tester)");
    done_testing;
    exit 1;
}
my $scen_dir = SipTest->repo . '/t/sipp';

my $t = SipTest->new(scripts => {
    'redirect@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 302 Moved Temporarily\\nContact: <sip:elsewhere\@127.0.0.1:5099>\\n\\n'\n",
    'busy@127.0.0.1'     => "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n",
    'call@127.0.0.1'     => "#!/bin/sh\n"
        . "case \"\$REQUEST_METHOD\" in\n"
        . "BYE) printf 'SIP/2.0 200 OK\\nX-Method: BYE-OK\\n\\n' ;;\n"
        . "INVITE) printf 'SIP/2.0 200 OK\\nContact: <sip:call\@127.0.0.1:\@SIPPORT\@>\\nContent-Type: text/plain\\n\\n'\n"
        . "        /usr/bin/env | LC_ALL=C /usr/bin/sort ;;\n"
        . "*) printf 'SIP/2.0 200 OK\\nX-Method: other\\n\\n' ;;\n"
        . "esac\n",
});
my $port = $t->sip_port;


sub run_sipp {
    my ($scenario, $service, $transport) = @_;
    my $tag = "$scenario-$transport";
    my $dir = $t->dir;
    my $stf = "$dir/sipp-$tag.csv";
    my $err = "$dir/sipp-$tag-errors.log";
    my $out = "$dir/sipp-$tag.out";
    my $lport = free_port();
    my @cmd = ($SIPP, '-sf', "$scen_dir/$scenario.xml", '-s', $service,
               '-m', 5, '-r', 5, '-timeout', '20s', '-timeout_error', '-nostdin',
               '-buff_size', 4194304, '-trace_stat', '-stf', $stf,
               '-trace_err', '-error_file', $err,
               '-p', $lport, '-i', '127.0.0.1', '-t', $transport, "127.0.0.1:$port");
    my $t0 = time;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        chdir $dir;
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $out);
        open(STDERR, '>&', \*STDOUT);
        { no warnings 'exec'; exec @cmd; }
        POSIX::_exit(127);
    }
    my $done = 0;
    while (time - $t0 < 60) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $done = 1; last }
        sleep 0.1;
    }
    unless ($done) { kill 'KILL', $pid; waitpid($pid, 0); }
    my $rc = $? >> 8;
    my $all = 1;
    $all = (ok($done, "sipp $tag finished by itself")) && $all;
    $all = (is($rc, 0, "sipp $tag exit code 0")) && $all;
    my $s = SipTest::sipp_stats($stf);
    $all = (ok($s, "sipp $tag wrote statistics")) && $all;
    $all = (is($s && $s->{'SuccessfulCall(C)'}, 5, "sipp $tag: 5 successful calls")) && $all;
    $all = (is($s && $s->{'FailedCall(C)'}, 0, "sipp $tag: 0 failed calls")) && $all;
    unless ($all) {
        for my $f ($out, $err) {
            next unless -s $f;
            open(my $fh, '<', $f) or next;
            local $/;
            my $txt = <$fh>;
            $txt = substr($txt, -4000) if length $txt > 4000;
            diag("--- $f:\n$txt");
        }
        diag("command: @cmd");
    }
}

for my $tr (qw(u1 t1)) {
    run_sipp('options',  'nobody',   $tr);
    run_sipp('redirect', 'redirect', $tr);
    run_sipp('busy',     'busy',     $tr);
    run_sipp('call',     'call',     $tr);
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
