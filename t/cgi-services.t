#!/usr/bin/perl
# The example SIP-CGI services of sip-cgi-bin/, end to end with SIPp peers:
#   cfna@127.0.0.1   call forward on no answer (RFC 3050 §3.6, §5.7, §5.8)
#   tod@127.0.0.1    time-of-day routing
#   ring2@127.0.0.1  parallel ringing
#   screen@127.0.0.1 call screening by From
# Each script is copied unchanged from sip-cgi-bin/ into the test's
# SipDirectory with a test .conf next to it.  SIPp scenarios: t/sipp/cgi-*.xml.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg);

SipTest::sipp_available() or do { done_testing; exit 1 };

my $bin = SipTest->repo . '/sip-cgi-bin';
my $t = SipCgiTest->new;
my $port = $t->sip_port;

sub install {
    my ($name) = @_;
    open(my $fh, '<', "$bin/$name") or die "$bin/$name: $!";
    local $/;
    my $text = <$fh>;
    $t->write_script($name, text => $text, mode => 0755);
}
sub conf { my ($name, $text) = @_; $t->write_script($name, text => $text, mode => 0644) }
install($_) for qw(cfna@127.0.0.1 tod@127.0.0.1 ring2@127.0.0.1 screen@127.0.0.1);

sub uas { my ($name, $sf, %o) = @_; return $t->sipp_start(name => $name, sf => $sf, m => 1, d => $o{d} // 0) }
sub uac {
    my ($name, $sf, $service, $caller) = @_;
    return $t->sipp_start(name => $name, sf => $sf, m => 1, service => $service,
                          remote => "127.0.0.1:$port", keys => { caller => $caller // 'alice@127.0.0.1' });
}
sub target { my ($h, $user) = @_; return "sip:$user\@127.0.0.1:$h->{port}" }
sub got { my ($h, $m, %o) = @_; return SipTest::sipp_msgs($h, dir => 'received', method => $m, %o) }
sub finals {
    my ($uac) = @_;
    my (@c, %seen);
    for my $r (SipTest::sipp_msgs($uac, dir => 'received', cseq_method => 'INVITE')) {
        push @c, $r->code if $r->code >= 200 && !$seen{ $r->code }++;
    }
    return @c;
}
sub sent_invite { my ($uac) = @_; my ($e) = SipTest::sipp_msgs($uac, dir => 'sent', method => 'INVITE', full => 1); return $e }

# ---- cfna: the desk rings, nobody answers; after TIMEOUT=2 s voicemail takes the call
{
    my $desk = uas('cfna-desk', 'cgi-uas-ring-cancel.xml');
    my $vm   = uas('cfna-vm', 'cgi-uas-answer.xml', d => 200);
    conf('cfna.conf', "DESK=" . target($desk, 'desk') . "\nVOICEMAIL=" . target($vm, 'vm') . "\nTIMEOUT=2\n");
    my $uac = uac('cfna-uac', 'cgi-uac-call.xml', 'cfna');
    $t->sipp_ok($uac, calls => 1, label => 'cfna (desk rings): caller');
    $t->sipp_ok($desk, calls => 1, label => 'cfna (desk rings): desk (rings, CANCELled)');
    $t->sipp_ok($vm, calls => 1, label => 'cfna (desk rings): voicemail (answers)');
    my ($di) = got($desk, 'INVITE', full => 1);
    my ($dc) = got($desk, 'CANCEL', full => 1);
    my ($vi) = got($vm, 'INVITE', full => 1);
    is($di && $di->{msg}->uri, target($desk, 'desk'), 'cfna: INVITE to the DESK URI of cfna.conf');
    is($di && $di->{msg}->header('expires'), '2', 'cfna: with Expires: TIMEOUT');
    ok($dc, 'cfna: the ringing desk gets a CANCEL');
    my $dt = $di && $dc ? $dc->{time} - $di->{time} : -1;
    ok($dt >= 1.7 && $dt <= 3.5, sprintf('cfna: ... TIMEOUT (2 s) after its INVITE (%.2f s)', $dt));
    is($vi && $vi->{msg}->uri, target($vm, 'vm'), 'cfna: then the call goes to the VOICEMAIL URI');
    my $vt = $di && $vi ? $vi->{time} - $di->{time} : -1;
    ok($vt >= 1.7 && $vt <= 3.5, sprintf('cfna: voicemail gets the INVITE about 2 s after the desk (%.2f s)', $vt));
    is($vi && $vi->{msg}->body, $di && $di->{msg}->body, 'cfna: voicemail gets the caller\'s SDP');
    is_deeply([ finals($uac) ], [200], 'cfna: the caller gets 200 (from voicemail), no other final response');
    ok(scalar(grep { $_->code == 180 } SipTest::sipp_msgs($uac, dir => 'received')), 'cfna: the caller heard the desk ringing (180)');
    ok(scalar(got($vm, 'ACK')) && scalar(got($vm, 'BYE')), 'cfna: ACK and BYE reach voicemail');
    ok(scalar(got($desk, 'ACK')), 'cfna: the desk\'s 487 is ACKed by the server');
}

# ---- cfna: the desk never answers at all (no provisional response, so no CANCEL)
{
    my $desk = uas('cfna2-desk', 'cgi-uas-silent.xml', d => 4000);
    my $vm   = uas('cfna2-vm', 'cgi-uas-answer.xml');
    conf('cfna.conf', "DESK=" . target($desk, 'desk') . "\nVOICEMAIL=" . target($vm, 'vm') . "\nTIMEOUT=2\n");
    my $uac = uac('cfna2-uac', 'cgi-uac-call.xml', 'cfna');
    $t->sipp_ok($uac, calls => 1, label => 'cfna (desk silent): caller');
    $t->sipp_ok($vm, calls => 1, label => 'cfna (desk silent): voicemail');
    $t->sipp_ok($desk, calls => 1, label => 'cfna (desk silent): desk got the INVITE and nothing else (no CANCEL)');
    my ($di) = got($desk, 'INVITE', full => 1);
    my ($vi) = got($vm, 'INVITE', full => 1);
    my $vt = $di && $vi ? $vi->{time} - $di->{time} : -1;
    ok($vt >= 1.7 && $vt <= 3.5, sprintf('cfna (desk silent): voicemail gets the INVITE about 2 s later (%.2f s)', $vt));
    is_deeply([ finals($uac) ], [200], 'cfna (desk silent): the caller gets 200');
}

# ---- tod: office at 10 h, mobile at 22 h
{
    my $office = uas('tod-office', 'cgi-uas-answer.xml');
    my $mobile = uas('tod-mobile', 'cgi-uas-answer.xml');
    my $base = "OFFICE=" . target($office, 'office') . "\nMOBILE=" . target($mobile, 'mobile') . "\nOPEN=8\nCLOSE=18\n";
    conf('tod.conf', $base . "HOUR=10\n");
    my $uac1 = uac('tod-uac10', 'cgi-uac-call.xml', 'tod');
    $t->sipp_ok($uac1, calls => 1, label => 'tod 10 h: caller');
    $t->sipp_ok($office, calls => 1, label => 'tod 10 h: office');
    conf('tod.conf', $base . "HOUR=22\n");
    my $uac2 = uac('tod-uac22', 'cgi-uac-call.xml', 'tod');
    $t->sipp_ok($uac2, calls => 1, label => 'tod 22 h: caller');
    $t->sipp_ok($mobile, calls => 1, label => 'tod 22 h: mobile');
    my $c1 = sent_invite($uac1);
    my $c2 = sent_invite($uac2);
    my @oi = got($office, 'INVITE');
    my @mi = got($mobile, 'INVITE');
    is(join(' ', map { $_->header('call-id') } @oi), $c1 && $c1->{msg}->header('call-id'), 'tod: at 10 h the call goes to the office (and only that call)');
    is(join(' ', map { $_->header('call-id') } @mi), $c2 && $c2->{msg}->header('call-id'), 'tod: at 22 h the call goes to the mobile (and only that call)');
    is($oi[0] && $oi[0]->uri, target($office, 'office'), 'tod: office Request-URI from tod.conf');
    is($mi[0] && $mi[0]->uri, target($mobile, 'mobile'), 'tod: mobile Request-URI from tod.conf');
}

# ---- ring2: both ring, the desk answers after 1 s, the mobile is CANCELled
{
    my $desk   = uas('ring2-desk', 'cgi-uas-answer.xml', d => 1000);
    my $mobile = uas('ring2-mobile', 'cgi-uas-ring-cancel.xml');
    conf('ring2.conf', "FIRST=" . target($desk, 'desk') . "\nSECOND=" . target($mobile, 'mobile') . "\n");
    my $uac = uac('ring2-uac', 'cgi-uac-call.xml', 'ring2');
    $t->sipp_ok($uac, calls => 1, label => 'ring2: caller');
    $t->sipp_ok($desk, calls => 1, label => 'ring2: desk (answers)');
    $t->sipp_ok($mobile, calls => 1, label => 'ring2: mobile (rings, CANCELled)');
    my ($di) = got($desk, 'INVITE', full => 1);
    my ($mi) = got($mobile, 'INVITE', full => 1);
    ok($di && $mi && abs($di->{time} - $mi->{time}) < 0.5, 'ring2: both phones get the INVITE at once (parallel fork)');
    ok(!(grep { $_->[0] =~ /^cgi-/i } map { $_->{msg}->header_list } grep { $_ } $di, $mi),
       'ring2: no CGI-Request-Token on the wire');
    my ($mc) = got($mobile, 'CANCEL', full => 1);
    ok($mc, 'ring2: the mobile gets a CANCEL once the desk answered');
    is_deeply([ finals($uac) ], [200], 'ring2: the caller gets the 200, and not the mobile\'s 487');
    my ($ok) = SipTest::sipp_msgs($uac, dir => 'received', code => 200, cseq_method => 'INVITE');
    like($ok && $ok->header('contact') // '', qr/:\Q$desk->{port}\E[;>]/, 'ring2: the 200 is the desk\'s');
}

# ---- screen: a listed caller gets 603, others reach the target
{
    my $target = uas('screen-target', 'cgi-uas-answer.xml');
    conf('screen.conf', "TARGET=" . target($target, 'alice') . "\n");
    conf('screen.list', "# test list\nsip:spammer\@example.com\n");
    my $mark = $t->log_mark;
    my $uac1 = uac('screen-spam', 'cgi-uac-reject.xml', 'screen', 'spammer@example.com');
    $t->sipp_ok($uac1, calls => 1, label => 'screen: blocked caller');
    is_deeply([ finals($uac1) ], [603], 'screen: the caller in screen.list gets 603 Decline');
    ok($t->wait_log($mark, qr/screen: declined sip:spammer\@example\.com/), 'screen: the script logged the declined caller (stderr)');
    my $uac2 = uac('screen-friend', 'cgi-uac-call.xml', 'screen', 'friend@example.org');
    $t->sipp_ok($uac2, calls => 1, label => 'screen: other caller');
    $t->sipp_ok($target, calls => 1, label => 'screen: target');
    my @ti = got($target, 'INVITE');
    my $c2 = sent_invite($uac2);
    is(join(' ', map { $_->header('call-id') } @ti), $c2 && $c2->{msg}->header('call-id'),
       'screen: only the other caller\'s call reached the target');
    is($ti[0] && $ti[0]->uri, target($target, 'alice'), 'screen: to the TARGET of screen.conf');
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
