#!/usr/bin/perl
# Several engines (SipEngines 2): a phone that has its REGISTER's 200 finds
# its binding on every engine at once.  The home engine answers a REGISTER
# only after the change went to the other engines, and an engine applies
# the replicas already sent to it before it routes a request
# (sip_handover_catch_up).  Without that, a MESSAGE sent right after the
# 200 and landing on the other engine got 404 (binding not there yet), and
# one sent right after an unREGISTER was still forwarded.
#
# Each round, for a user homed at either engine, from a fresh source port
# (the kernel spreads them over both engines):
#   REGISTER, and the moment its 200 arrives a MESSAGE: forwarded to the
#   contact;  REGISTER expires=0, and at once a MESSAGE: 480, nothing
#   forwarded.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use SipTest qw(parse_msg rand_token response_to);
use SipRegTest;

my $t = SipRegTest->new(server_conf => "SipEngines 2\n");
my $port = $t->sip_port;
is(scalar(grep { $_ } $t->engine_pids), 2, 'two engines run');

sub message_from {
    my ($s, $user) = @_;
    $t->udp_send($t->sip_request(method => 'MESSAGE', uri => $t->aor($user), sock => $s,
                                 content_type => 'text/plain', body => 'hi'), sock => $s);
}

my $rounds = 60;
my ($found, $gone, $late_fwd, $homes) = (0, 0, 0, {});
my $uas = $t->udp_socket;
my $up = $uas->sockport;
for my $i (1 .. $rounds) {
    my $user = "ro$i" . rand_token(4);
    $homes->{ SipRegTest::engine_home($t->aor($user)) }++;
    my $ua = $t->udp_socket;        # a new port each round: either engine
    my $r = $t->register(user => $user, sock => $ua, contacts => [ "<sip:$user\@127.0.0.1:$up>" ],
                         expires => 600);
    unless ($r && $r->code == 200) {
        fail("round $i: REGISTER got " . ($r ? $r->code : 'nothing'));
        next;
    }
    message_from($ua, $user);
    my $fwd = $t->udp_new_request($uas, 3, 'MESSAGE');
    if ($fwd) {
        $found++;
        $t->udp_send(response_to(parse_msg($fwd), 200, 'OK', tag => 'u'), sock => $uas,
                     port => $port);
        my $f = $t->udp_final($ua, 3);
        diag("round $i: the MESSAGE's final: " . ($f ? $f->code : 'none'))
            unless $f && $f->code == 200;
    }
    else {
        my $f = $t->udp_final($ua, 1);
        diag("round $i: MESSAGE right after the 200 not forwarded (" . ($f ? $f->code : 'nothing')
             . ')');
    }

    $r = $t->register(user => $user, sock => $ua, contacts => [ "<sip:$user\@127.0.0.1:$up>" ],
                      expires => 0, cseq => 2, call_id => $r->header('call-id'));
    unless ($r && $r->code == 200) {
        fail("round $i: unREGISTER got " . ($r ? $r->code : 'nothing'));
        next;
    }
    message_from($ua, $user);
    my $f = $t->udp_final($ua, 3);
    $gone++ if $f && $f->code == 480;
    diag("round $i: MESSAGE right after the unREGISTER got " . ($f ? $f->code : 'nothing'))
        unless $f && $f->code == 480;
    if (my $x = $t->udp_new_request($uas, 0.05, 'MESSAGE')) {
        $late_fwd++;
        $t->udp_send(response_to(parse_msg($x), 200, 'OK', tag => 'u'), sock => $uas,
                     port => $port);
    }
}
ok($homes->{0} && $homes->{1}, 'users homed at both engines') or diag(explain($homes));
is($found, $rounds, 'a MESSAGE right after the REGISTER\'s 200 reached the new contact every time');
is($gone, $rounds, 'a MESSAGE right after the unREGISTER\'s 200 got 480 every time');
is($late_fwd, 0, 'nothing forwarded to a removed contact');
ok($t->options_ok('udp'), 'server still answers');
is(scalar(grep { $_ } $t->engine_pids), 2, 'both engines still run');
$t->dump_log_on_failure;
$t->stop;
done_testing;
