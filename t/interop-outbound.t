#!/usr/bin/perl
# Interop (issue 17): baresip (Debian package) as an RFC 5626 outbound
# client (;sipnat=outbound: +sip.instance, reg-id, ;ob, CRLF keep-alives)
# over TCP, against httpd + mod_sip with digest authentication:
#   - its REGISTER gets a 200 with Require: outbound and Flow-Timer, which
#     lists its Contact with the instance and reg-id;
#   - a plain UDP baresip calls it: the INVITE reaches it over its own
#     connection (the flow) and the call is established, then hung up;
#   - after the outbound phone is killed (no un-REGISTER: its binding stays,
#     its connection closes), a call to it fails at once with 480 (its
#     Contact is never dialled: §5.3).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(wait_until);
use SipPhone;

SipPhone::available() or do { fail('baresip installed'); done_testing; exit 1 };
note('baresip ' . SipPhone::version());

my %pw = (obi => 'obi-pw', udo => 'udo-pw');
my $t = SipPhone::interop_server(users => \%pw, realm => 'sip.test');

my $ob = SipPhone->new(t => $t, user => 'obi', password => $pw{obi}, transport => 'tcp',
                       account => ';sipnat=outbound');
ok($ob->registered, 'the outbound phone (TCP, sipnat=outbound) registers');
my @reg = $ob->msgs(method => 'REGISTER', dir => 'sent');
like($reg[-1] ? join(',', $reg[-1]{msg}->header_elems('contact')) : '', qr/reg-id=1/,
     '... its REGISTER carries a reg-id');
my ($ok) = grep { $_->{dir} eq 'received' && $_->{msg}->code == 200 } $ob->msgs(cseq => 'REGISTER');
is($ok && $ok->{msg}->header('require'), 'outbound', '... the 200 says Require: outbound');
like($ok ? $ok->{msg}->header('flow-timer') // '' : '', qr/^\d+$/, '... with a Flow-Timer');
like($ok ? join(',', $ok->{msg}->header_elems('contact')) : '', qr/\+sip\.instance=.*reg-id=1/,
     '... listing its Contact with instance and reg-id');

my $ud = SipPhone->new(t => $t, user => 'udo', password => $pw{udo});
ok($ud->registered, 'a plain UDP phone registers');

$_->mark for $ob, $ud;
my $r = $ud->cmd(dial => $ud->uri_for('obi'));
ok($r && $r->{ok}, 'the UDP phone dials the outbound one');
ok($ud->wait_event(type => 'CALL_ESTABLISHED', timeout => 8), 'established at the caller');
ok($ob->wait_event(type => 'CALL_ESTABLISHED', timeout => 2), 'established at the outbound phone');
my @inv = grep { $_->{dir} eq 'received' } $ob->msgs(method => 'INVITE');
is($inv[-1] && $inv[-1]{proto}, 'TCP', '... whose INVITE came over its TCP flow');
$ud->cmd('hangup');
ok($ob->wait_event(type => 'CALL_CLOSED', timeout => 5), 'the caller hangs up: closed at the callee');

# killed, not quit: no un-REGISTER, the binding stays and only its
# connection goes
my $pid = $ob->pid;
kill 'KILL', $pid;
waitpid($pid, 0);
$ob->{pid} = undef;
sleep 0.5;
$ud->mark;
$r = $ud->cmd(dial => $ud->uri_for('obi'));
my $t0 = time;
my $closed = $ud->wait_event(type => 'CALL_CLOSED', timeout => 10);
ok($closed, 'after the outbound phone quit, a call to it ends');
like($closed ? $closed->{param} // '' : '', qr/480/, '... with 480');
cmp_ok(time - $t0, '<', 3, '... at once');
like($t->error_log, qr/sip:obi\@127\.0\.0\.1 at \S+ not used: its TCP connection is closed/,
     '... the registrar logged the closed flow');

done_testing();
