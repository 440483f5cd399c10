#!/usr/bin/perl
# A user uploads a CPL call-forward-on-no-answer script with
# tools/sip-script (REGISTER, digest, over UDP and over TCP) and it runs
# for calls from a sipp caller: the registered phone (a sipp callee) rings,
# does not answer within the script's 3 s, the server cancels it and the
# call reaches voicemail (another sipp callee); a phone that answers in
# time keeps the call; a caller who hangs up while it rings ends it all
# (voicemail never called); once the script is removed, the phone alone
# rings.  A script the schema refuses (timeout="0") is not stored.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use SipCplTest;
use SipDigest qw(write_htdigest);

SipRegTest::sipp_present() or do { done_testing; exit 1 };
my $TOOL = SipTest::repo() . '/tools/sip-script';
ok(-x $TOOL, 'tools/sip-script is executable') or BAIL_OUT('no tools/sip-script');
my $MODDIR = $SipTest::MODDIR;
my $realm = 'upload.test';
my %pw = ('bob-u1' => 'bob-secret-1', 'bob-t1' => 'bob-secret-2');

my $t = SipCplTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        "LoadModule authz_user_module $MODDIR/mod_authz_user.so",
        'SipScriptStore @DIR@/var/scripts',
        '<Location "/">', qq{    AuthName "$realm"}, '    AuthUserFile @DIR@/users.htdigest',
        '    <Limit REGISTER>', '        Require valid-user', '    </Limit>', '</Location>', ''),
    vhost_conf => 'SipScriptUpload On',
    setup => sub { write_htdigest($_[0]->dir . '/users.htdigest', $realm, %pw) });
my $port = $t->sip_port;
my $tmp = tempdir('cpl_upload_XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub tool {
    my ($user, $tr, @args) = @_;
    my $out = `$^X $TOOL --server 127.0.0.1:$port --$tr --aor sip:$user\@127.0.0.1 --user $user --password $pw{$user} --timeout 5 @args 2>&1`;
    return ($? >> 8, $out);
}

for my $tr (qw(u1 t1)) {
    my $T = $tr eq 't1' ? 'TCP' : 'UDP';
    my $net = $tr eq 't1' ? 'tcp' : 'udp';
    my $user = "bob-$tr";
    my $r = $t->register_auth($user, $pw{$user}, $t->uri('callee', $tr));
    is($r && $r->code, 200, "$T: $user registers his phone");

    # refused by the schema: nothing stored, the phone alone rings
    my $bad = "$tmp/bad-$tr.cpl";
    open(my $f, '>', $bad) or die;
    print $f $t->cpl('forward-noanswer-upload.cpl', $tr, TIMEOUT => 0);
    close $f;
    my ($rc, $out) = tool($user, $net, 'upload', $bad);
    is($rc, 1, "$T: a script with timeout=\"0\" is refused");
    like($out, qr{SIP/2\.0 400 }, "$T: ... with 400") or diag($out);

    my $file = "$tmp/fwd-$tr.cpl";
    open($f, '>', $file) or die;
    print $f $t->cpl('forward-noanswer-upload.cpl', $tr, TIMEOUT => 3);
    close $f;
    ($rc, $out) = tool($user, $net, 'upload', $file);
    is($rc, 0, "$T: sip-script uploads the call-forward-on-no-answer script") or diag($out);
    ($rc, $out) = tool($user, $net, '--type', 'cpl', 'fetch', '--output', '-');
    like($out, qr/<noanswer>/, "$T: and fetches it back");

    my $t0 = time;
    $t->call(tr => $tr, label => "$T no answer", user => $user,
             uas => { callee => 'proxy-uas-ring-cancel.xml', vm => 'cgi-uas-answer.xml' },
             code => 200, at => 'vm', used => ['callee']);
    my $took = time - $t0;
    cmp_ok($took, '>=', 3, sprintf('%s: voicemail only after the 3 s timeout (%.1f s)', $T, $took));
    cmp_ok($took, '<', 15, "$T: and not much later");

    # the caller hangs up while the phone rings: the script's no-answer
    # output must not run once the call is gone (not even after 3 s)
    {
        my $ring = $t->sipp_start(name => "cancel-callee-$tr", sf => 'proxy-uas-ring-cancel.xml', transport => $tr,
                                  port => $t->port_of('callee', $tr), m => 1, timeout => '20s');
        my $vm = $t->sipp_start(name => "cancel-vm-$tr", sf => 'cgi-uas-answer.xml', transport => $tr,
                                port => $t->port_of('vm', $tr), m => 1, d => 100, timeout => '20s');
        my $uac = $t->sipp_start(name => "cancel-uac-$tr", sf => 'proxy-uac-cancel.xml', transport => $tr, m => 1,
                                 service => $user, remote => "127.0.0.1:$port", keys => { uri_params => '' },
                                 timeout => '20s');
        $t->sipp_ok($uac, label => "$T caller cancels while ringing: CANCEL 200, INVITE 487", timeout => 20);
        $t->sipp_ok($ring, label => "$T caller cancels while ringing: the phone is cancelled", timeout => 10);
        sleep 4;
        $t->sipp_wait($vm, 0.2);
        is(scalar(SipTest::sipp_msgs($vm, dir => 'received', method => 'INVITE')), 0,
           "$T caller cancels while ringing: voicemail is never called");
    }

    $t->call(tr => $tr, label => "$T answered in time", user => $user,
             uas => { callee => 'cgi-uas-answer.xml', vm => 'cgi-uas-answer.xml' },
             code => 200, at => 'callee');

    ($rc, $out) = tool($user, $net, 'remove', 'cpl');
    is($rc, 0, "$T: sip-script removes the script") or diag($out);
    ($rc, $out) = tool($user, $net, 'fetch', '--output', $tmp);
    like($out, qr/no script stored/, "$T: nothing stored any more") or diag($out);
    # without the script: the phone rings until the caller's own timeout
    # would end it, so let it answer late (after 3 s) and keep the call
    $t->call(tr => $tr, label => "$T script removed", user => $user,
             uas => { callee => [ 'cgi-uas-answer.xml' ], vm => 'cgi-uas-answer.xml' },
             code => 200, at => 'callee', uas_pause => 4000);
}

ok($t->options_ok('udp') && $t->options_ok('tcp'), 'server still answers OPTIONS over UDP and TCP');
$t->dump_log_on_failure;
$t->stop;
done_testing;
