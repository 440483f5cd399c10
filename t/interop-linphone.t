#!/usr/bin/perl
# Interop with linphonec (Debian package linphone-cli) next to baresip
# (t/lib/SipLinphone.pm, t/lib/SipPhone.pm), through httpd + mod_sip
# configured like conf/run.conf.in with SipAuth On and an htdigest file.
#
# For UDP, and for TCP with a TCP-only linphonec (sip_port=0):
#   linphonec registers with digest; baresip calls linphonec (auto answer)
#   and linphonec hangs up; linphonec calls baresip and hangs up; baresip
#   calls linphonec and hangs up; linphonec sends a MESSAGE (chat) to
#   baresip.  Each call: both phones see it established and ended, no call
#   left in either, and the server's counters show no failure.
# Issue 11's bugs (the caller's BYE challenged, TCP in-dialog requests
# over UDP) were found with these two phones.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(wait_until);
use SipPhone;
use SipLinphone;

SipPhone::available() && SipLinphone::available() or do { done_testing; exit 1 };
note('baresip ' . SipPhone::version() . ', linphonec ' . SipLinphone::version());

my $realm = 'sip.test';
my %pw = (alice => 'alice-pw', carol => 'carol-pw');

my $t = SipPhone::interop_server(users => \%pw, realm => $realm);
my $port = $t->sip_port;
sub stats { SipPhone::server_status($t) }

# linphonec ends the established call: both sides see it end, no call is
# left, the server is fine.  Returns the server's counters afterwards.
sub linphonec_hangs_up {
    my ($L, $A, $C, $s) = @_;
    sleep 0.5;
    my $m = $C->mark;
    $C->send('terminate');
    ok($C->wait_output(qr/Call \d+ with \S+ ended/, 3, $m), "$L: ended at linphonec");
    ok($A->wait_event(type => 'CALL_CLOSED', timeout => 5), "$L: closed at baresip (the BYE got through)")
        or diag($A->flow(6) . "\n" . $C->tail);
    bs_calls_zero($L, $A);
    lin_calls_zero($L, $C);
    cleanup($A, $C);
    return server_ok($L, $s);
}

sub server_ok {
    my ($label, $before) = @_;
    my $after = stats();
    my %bad = map { $_ => ($after->{$_} // 0) - ($before->{$_} // 0) }
        qw(SipEngineCrashes SipEngineRestarts SipBadMessages SipSendErrors SipClientTransactionTimeouts
           SipResponses5xx SipResponses6xx);
    is_deeply({ map { $_ => $bad{$_} } grep { $bad{$_} } keys %bad }, {},
              "$label: server counters show no crash, restart, bad message, send error, timeout, 5xx/6xx")
        or diag(explain(\%bad));
    return $after;
}

sub lin_calls_zero {
    my ($label, $c) = @_;
    my $n;
    wait_until(5, sub { $n = $c->active_calls; $n == 0 }, 0.3);
    is($n, 0, "$label: linphonec has no call left") or diag($c->tail);
}

sub bs_calls_zero {
    my ($label, $a) = @_;
    my $n;
    wait_until(5, sub { $n = $a->active_calls; $n == 0 }, 0.2);
    is($n, 0, "$label: baresip has no call left");
}

sub cleanup {
    my ($a, $c) = @_;
    for (1 .. 3) {
        last if $a->active_calls <= 0;
        $a->cmd('hangup');
        $a->settle(0.3);
    }
    $c->send('terminate all') if $c->active_calls > 0;
    $a->mark;
}

for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    my $s = stats();
    my $regs0 = $s->{SipRegistrationsNow} // 0;
    my $C = SipLinphone->new(t => $t, user => 'carol', password => $pw{carol}, transport => $tr, name => "carol-$tr");
    ok($C->registered, "$T: linphonec registered with digest") or diag($C->tail);
    my $A = SipPhone->new(t => $t, user => 'alice', password => $pw{alice}, transport => $tr, name => "alice-$tr");
    ok($A->registered, "$T: baresip registered with digest");
    my $regs;
    ok(wait_until(3, sub { $regs = stats()->{SipRegistrationsNow}; $regs - $regs0 == 2 }, 0.1),
       "$T: SipRegistrationsNow +2") or diag("now $regs");
    $s = server_ok("$T register", $s);

    my $carol = "sip:carol\@127.0.0.1:$port";
    my $alice = "sip:alice\@127.0.0.1:$port" . ($tr eq 'tcp' ? ';transport=tcp' : '');

    # ---------------------------------------------- baresip calls, linphonec hangs up
    {
        my $L = "$T baresip calls linphonec, linphonec hangs up";
        my $m = $C->mark;
        $A->mark;
        $A->cmd(dial => $carol);
        ok($A->wait_event(type => 'CALL_ESTABLISHED', timeout => 8), "$L: established at baresip");
        ok($C->wait_output(qr/Call \d+ with \S+ connected/, 3, $m), "$L: connected at linphonec") or diag($C->tail);
        $s = linphonec_hangs_up($L, $A, $C, $s);
    }

    # ---------------------------------------------- linphonec calls, linphonec hangs up
    {
        my $L = "$T linphonec calls baresip, linphonec hangs up";
        my $m = $C->mark;
        $A->mark;
        $C->send("call $alice");
        {
            # a TCP-only linphonec cannot send the ACK to a UDP Record-Route,
            # and baresip reports the call established on the ACK
            ok($A->wait_event(type => 'CALL_ESTABLISHED', timeout => 8), "$L: established at baresip")
                or diag($C->tail);
        }
        ok($C->wait_output(qr/Call \d+ with \S+ connected/, 3, $m), "$L: connected at linphonec");
        $s = linphonec_hangs_up($L, $A, $C, $s);
    }

    # ---------------------------------------------- baresip calls, baresip hangs up
    {
        my $L = "$T baresip calls linphonec, baresip hangs up";
        my $m = $C->mark;
        $A->mark;
        $A->cmd(dial => $carol);
        ok($A->wait_event(type => 'CALL_ESTABLISHED', timeout => 8), "$L: established at baresip");
        ok($C->wait_output(qr/Call \d+ with \S+ connected/, 3, $m), "$L: connected at linphonec");
        sleep 0.5;
        $m = $C->mark;
        $A->cmd('hangup');
        ok($A->wait_event(type => 'CALL_CLOSED', timeout => 3), "$L: closed at baresip");
        {
            ok($C->wait_output(qr/Call \d+ with \S+ ended/, 5, $m), "$L: ended at linphonec (the BYE got through)")
                or diag($A->flow(6));
            lin_calls_zero($L, $C);
        }
        bs_calls_zero($L, $A);
        cleanup($A, $C);
        $s = server_ok($L, $s);
    }

    # ---------------------------------------------- MESSAGE from linphonec
    {
        my $L = "$T MESSAGE from linphonec";
        my $n = scalar(my @x = $A->msgs(method => 'MESSAGE', dir => 'received'));
        my $text = "hi alice over $tr";
        $C->send("chat $alice $text");
        my $got;
        ok(wait_until(5, sub { my @m = $A->msgs(method => 'MESSAGE', dir => 'received');
                               $got = $m[-1] if @m > $n; $got }, 0.1), "$L: baresip received it")
            or diag($C->tail);
        is($got && $got->{msg}->body, $text, "$L: with the text");
        $s = server_ok($L, $s);
    }

    ok($A->stop, "$T: baresip quit by itself");
    ok($C->stop, "$T: linphonec quit by itself");
    ok(wait_until(5, sub { $regs = stats()->{SipRegistrationsNow}; $regs == $regs0 }, 0.1),
       "$T: both unregistered when they quit") or diag("now $regs");
}

$t->stop;
done_testing;
