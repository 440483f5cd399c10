#!/usr/bin/perl
# The example scripts of RFC 3880 §16, end to end with sipp callers and
# callees over UDP and TCP: each script (t/cpl/*.cpl, addresses filled in
# by t/lib/SipCplTest.pm) is installed for its owner, over UDP as the
# administrator script user@host.cpl in SipDirectory, over TCP uploaded in
# a REGISTER with tools/sip-script; every call asserts the final status
# the caller gets, which callee answered, which were tried (busy, ringing
# until cancelled, redirecting) and that no other callee saw an INVITE.
#   §16.1 redirect-unconditional   302 to a fixed address
#   §16.2 forward-busy-noanswer    busy / no answer (3 s) -> voicemail
#   §16.3 forward-redirect-default the phone's 302 passed back; else voicemail
#         forward-recurse          the same with recurse="yes": followed
#   §16.4 call-screening           "anonymous" -> 603; others: default handling
#   §16.5 priority-language        urgent -> pager, non-urgent -> voicemail,
#                                  Spanish -> es operator, others -> en
#   §16.6 outgoing-screening       the owner's calls to 1-900 numbers -> 603,
#                                  only when the owner is digest-authenticated
#   §16.7 time-of-day              a window around now -> registered phone,
#                                  a window away from now -> voicemail
#   §16.8 location-filtering       registered phones except the office one
#   §16.9 non-signalling           log + mail, then the phone
#   §16.10 hybrid                  address/string switches, sequential proxy
# and the unusual: "ANONYMOUS" in capitals, a q=0 language, an unknown
# Priority value, a 1-900 number with visual separators, a look-alike
# domain (evilexample.com), an unauthenticated caller naming the owner.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use POSIX ();
use SipCplTest;
use SipDigest qw(write_htdigest);

SipRegTest::sipp_present() or do { done_testing; exit 1 };
my $TOOL = SipTest::repo() . '/tools/sip-script';
ok(-x $TOOL, 'tools/sip-script is executable') or BAIL_OUT('no tools/sip-script');
my $MODDIR = $SipTest::MODDIR;
my $realm = 'cpl.test';
my @TR = qw(u1 t1);

# every owner registers or uploads with digest; carol-* also calls with it
my @owners = qw(redir fwdbn fwdrd fwdrec screen prio carol dest todin todout filter nonsig hybrid
                19005550001 19005550002);
my %pw;
for my $o (@owners) {
    if ($o =~ /^\d+$/) { $pw{$o} = "pw-$o"; next }
    $pw{"$o-$_"} = "pw-$o-$_" for @TR;
}

my $t = SipCplTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        "LoadModule authz_user_module $MODDIR/mod_authz_user.so",
        'SipScriptStore @DIR@/var/scripts',
        '<Location "/">', qq{    AuthName "$realm"}, '    AuthUserFile @DIR@/users.htdigest',
        '    <Limit REGISTER>', '        Require valid-user', '    </Limit>', '</Location>',
        # calls to these need an authenticated caller, so <outgoing> runs
        '<LocationMatch "^/(19005551212|1-900-555-1212|dest-)">', '    <Limit INVITE>', '        Require valid-user',
        '    </Limit>', '</LocationMatch>', ''),
    vhost_conf => join("\n", 'SipScriptUpload On', 'SipCplMail "@DIR@/bin/fake-sendmail"', ''),
    setup => sub {
        my $dir = $_[0]->dir;
        write_htdigest("$dir/users.htdigest", $realm, %pw);
        mkdir "$dir/bin", 0755;
        # a sendmail that keeps what it is given, for §16.9
        open(my $f, '>', "$dir/bin/fake-sendmail") or die;
        print $f "#!/bin/sh\n{ echo \"ARGS: \$*\"; cat; } > $dir/var/mail.\$\$\n";
        close $f;
        chmod 0755, "$dir/bin/fake-sendmail";
    });
my $port = $t->sip_port;
my $engine0 = $t->engine_pid;
my $tmp = tempdir('cpl_rfc3880_XXXXXX', TMPDIR => 1, CLEANUP => 1);

# The script for $owner: over UDP an administrator file, over TCP an upload.
sub install {
    my ($owner, $tr, $file, %more) = @_;
    my $xml = $t->cpl($file, $tr, %more);
    if ($tr eq 'u1') {
        $t->admin_script($owner, $xml);
        return;
    }
    my $path = "$tmp/$owner.cpl";
    open(my $f, '>', $path) or die;
    print $f $xml;
    close $f;
    my $out = `$^X $TOOL --server 127.0.0.1:$port --tcp --aor sip:$owner\@127.0.0.1 --user $owner --password $pw{$owner} upload $path 2>&1`;
    is($? >> 8, 0, "$owner: sip-script uploads $file") or diag($out);
}

sub reg {
    my ($owner, @uris) = @_;
    my $r = $t->register_auth($owner, $pw{$owner}, @uris);
    is($r && $r->code, 200, "$owner: registered " . join(', ', @uris));
}

# time windows relative to the test's clock, in the script's time zone
sub local_stamp {
    my ($tz, $epoch) = @_;
    local $ENV{TZ} = $tz;
    POSIX::tzset();
    my $s = POSIX::strftime('%Y%m%dT%H%M%S', localtime $epoch);
    POSIX::tzset();
    return $s;
}
my $now = time;
my $open_start = local_stamp('America/New_York', $now - 3600);     # [now-1h, now+1h]
my $closed_start = POSIX::strftime('%Y%m%dT%H%M%SZ', gmtime($now + 2 * 3600));  # [now+2h, now+4h]

my $ANSWER = 'cgi-uas-answer.xml';
my $BUSY = 'proxy-uas-486.xml';
my $RING = 'proxy-uas-ring-cancel.xml';

for my $tr (@TR) {
    my $T = $tr eq 't1' ? 'TCP' : 'UDP';
    my $how = $tr eq 't1' ? 'uploaded' : 'SipDirectory';
    install("redir-$tr", $tr, 'redirect-unconditional.cpl');
    install("fwdbn-$tr", $tr, 'forward-busy-noanswer.cpl');
    install("fwdrd-$tr", $tr, 'forward-redirect-default.cpl');
    install("fwdrec-$tr", $tr, 'forward-recurse.cpl');
    install("screen-$tr", $tr, 'call-screening.cpl');
    install("prio-$tr", $tr, 'priority-language.cpl');
    install("carol-$tr", $tr, 'outgoing-screening.cpl');
    install("todin-$tr", $tr, 'time-of-day.cpl', TZID => 'America/New_York', DTSTART => $open_start);
    install("todout-$tr", $tr, 'time-of-day.cpl', TZID => 'UTC', DTSTART => $closed_start);
    install("filter-$tr", $tr, 'location-filtering.cpl');
    install("nonsig-$tr", $tr, 'non-signalling.cpl');
    install("hybrid-$tr", $tr, 'hybrid.cpl');
    reg("screen-$tr", $t->uri('callee', $tr));
    reg("dest-$tr", $t->uri('callee', $tr));
    reg($tr eq 'u1' ? '19005550001' : '19005550002', $t->uri('callee', $tr));
    reg("todin-$tr", $t->uri('callee', $tr));
    reg("todout-$tr", $t->uri('callee', $tr));
    reg("filter-$tr", $t->uri('office', $tr), $t->uri('mobile', $tr));

    my %base = (tr => $tr);
    my $P = "$T $how";

    # §16.1
    $t->call(%base, label => "$P §16.1 redirect", user => "redir-$tr", uas => { office => $ANSWER },
             code => 302, contact => 'office');

    # §16.2
    $t->call(%base, label => "$P §16.2 busy", user => "fwdbn-$tr",
             uas => { callee => $BUSY, vm => $ANSWER }, code => 200, at => 'vm', used => ['callee']);
    $t->call(%base, label => "$P §16.2 no answer", user => "fwdbn-$tr",
             uas => { callee => $RING, vm => $ANSWER }, code => 200, at => 'vm', used => ['callee']);
    $t->call(%base, label => "$P §16.2 answered", user => "fwdbn-$tr",
             uas => { callee => $ANSWER, vm => $ANSWER }, code => 200, at => 'callee');

    # §16.3
    my $to_mobile = [ 'cpl-uas-302.xml', { target => $t->uri('mobile', $tr) } ];
    $t->call(%base, label => "$P §16.3 redirection", user => "fwdrd-$tr",
             uas => { callee => $to_mobile, mobile => $ANSWER, vm => $ANSWER },
             code => 302, contact => 'mobile', used => ['callee']);
    $t->call(%base, label => "$P §16.3 default", user => "fwdrd-$tr",
             uas => { callee => $BUSY, vm => $ANSWER }, code => 200, at => 'vm', used => ['callee']);
    $t->call(%base, label => "$P §16.3 recurse=yes", user => "fwdrec-$tr",
             uas => { callee => $to_mobile, mobile => $ANSWER, vm => $ANSWER },
             code => 200, at => 'mobile', used => ['callee']);

    # §16.4
    $t->call(%base, label => "$P §16.4 anonymous", user => "screen-$tr", caller => 'anonymous@anonymous.invalid',
             display => '"Anonymous"', uas => { callee => $ANSWER },
             code => 603, reason => qr/^I reject anonymous calls$/);
    $t->call(%base, label => "$P §16.4 known caller", user => "screen-$tr", caller => 'bob@127.0.0.1',
             uas => { callee => $ANSWER }, code => 200, at => 'callee');
    # the user part compares with case (RFC 3261 §19.1.4): not "anonymous"
    $t->call(%base, label => "$P §16.4 ANONYMOUS in capitals", user => "screen-$tr",
             caller => 'ANONYMOUS@anonymous.invalid', uas => { callee => $ANSWER }, code => 200, at => 'callee');

    # §16.5
    my %ops = (pager => $ANSWER, vm => $ANSWER, es => $ANSWER, en => $ANSWER);
    $t->call(%base, label => "$P §16.5 urgent", user => "prio-$tr", hdr => 'Priority: urgent',
             uas => {%ops}, code => 200, at => 'pager');
    $t->call(%base, label => "$P §16.5 emergency", user => "prio-$tr", hdr => 'Priority: emergency',
             uas => {%ops}, code => 200, at => 'pager');
    $t->call(%base, label => "$P §16.5 non-urgent", user => "prio-$tr", hdr => 'Priority: non-urgent',
             uas => {%ops}, code => 200, at => 'vm');
    $t->call(%base, label => "$P §16.5 Spanish", user => "prio-$tr", hdr => 'Accept-Language: es',
             uas => {%ops}, code => 200, at => 'es');
    $t->call(%base, label => "$P §16.5 German", user => "prio-$tr", hdr => 'Accept-Language: de',
             uas => {%ops}, code => 200, at => 'en');
    $t->call(%base, label => "$P §16.5 no Priority, no Accept-Language", user => "prio-$tr",
             uas => {%ops}, code => 200, at => 'en');
    $t->call(%base, label => "$P §16.5 Spanish after a refused (q=0) English", user => "prio-$tr",
             hdr => 'Accept-Language: en;q=0, es', uas => {%ops}, code => 200, at => 'es');
    # an unknown priority is "normal" for less/greater: the language decides
    $t->call(%base, label => "$P §16.5 unknown Priority value", user => "prio-$tr",
             hdr => 'Priority: super-urgent', uas => {%ops}, code => 200, at => 'en');

    # §16.6: carol's own script, for calls she places authenticated
    my @carol = (caller => "carol-$tr\@127.0.0.1", auth => [ "carol-$tr", $pw{"carol-$tr"} ]);
    $t->call(%base, label => "$P §16.6 authenticated call to 1-900", @carol, user => '19005551212',
             uri_params => ';user=phone', uas => { callee => $ANSWER },
             code => 603, reason => qr/^Not allowed to make 1-900 calls\.$/);
    # visual separators in the number (RFC 3966) do not hide the prefix
    $t->call(%base, label => "$P §16.6 authenticated call to 1-900-555-1212", @carol, user => '1-900-555-1212',
             uri_params => ';user=phone', uas => { callee => $ANSWER },
             code => 603, reason => qr/^Not allowed to make 1-900 calls\.$/);
    $t->call(%base, label => "$P §16.6 authenticated call elsewhere", @carol, user => "dest-$tr",
             uas => { callee => $ANSWER }, code => 200, at => 'callee');
    $t->call(%base, label => "$P §16.6 unauthenticated: <outgoing> does not run", caller => "carol-$tr\@127.0.0.1",
             user => $tr eq 'u1' ? '19005550001' : '19005550002', uri_params => ';user=phone',
             uas => { callee => $ANSWER }, code => 200, at => 'callee');

    # §16.7
    $t->call(%base, label => "$P §16.7 inside the window", user => "todin-$tr",
             uas => { callee => $ANSWER, vm => $ANSWER }, code => 200, at => 'callee');
    $t->call(%base, label => "$P §16.7 outside the window", user => "todout-$tr",
             uas => { callee => $ANSWER, vm => $ANSWER }, code => 200, at => 'vm');

    # §16.8
    $t->call(%base, label => "$P §16.8 office removed", user => "filter-$tr",
             uas => { office => $ANSWER, mobile => $ANSWER }, code => 200, at => 'mobile');

    # §16.9
    my $mark = $t->log_mark;
    my @mail0 = glob($t->var . '/mail.*');
    $t->call(%base, label => "$P §16.9 log and mail", user => "nonsig-$tr",
             uas => { callee => $ANSWER }, code => 200, at => 'callee');
    like($t->wait_log($mark, qr/incoming call logged by a CPL script/, 5), qr/cpl-test/,
         "$P §16.9: the <log> line names the log and carries the comment");
    my @mail;
    SipTest::wait_until(5, sub { @mail = glob($t->var . '/mail.*'); @mail > @mail0 });
    is(scalar(@mail), @mail0 + 1, "$P §16.9: one mail sent");
    my %old = map { $_ => 1 } @mail0;
    my ($new) = grep { !$old{$_} } @mail;
    my $text = '';
    if ($new) { SipTest::wait_until(3, sub { open(my $m, '<', $new) or return 0; local $/; $text = <$m> // ''; $text =~ /\n\r?\n/ }) }
    like($text, qr/owner\@example\.com/, "$P §16.9: the mail goes to owner\@example.com");
    like($text, qr/^Subject: incoming call from CPL\r?$/mi, "$P §16.9: with the URL's subject");

    # §16.10
    $t->call(%base, label => "$P §16.10 urgent from example.com", user => "hybrid-$tr",
             caller => 'boss@sales.example.com', subject => 'urgent: the disk is full',
             uas => { pager => $BUSY, mobile => $ANSWER, callee => $ANSWER, vm => $ANSWER },
             code => 200, at => 'mobile', used => ['pager']);
    $t->call(%base, label => "$P §16.10 example.com, not urgent", user => "hybrid-$tr",
             caller => 'boss@example.com', subject => 'lunch?',
             uas => { pager => $ANSWER, mobile => $ANSWER, callee => $ANSWER, vm => $ANSWER },
             code => 200, at => 'callee');
    # a look-alike domain is not under example.com (whole labels)
    $t->call(%base, label => "$P §16.10 urgent from evilexample.com", user => "hybrid-$tr",
             caller => 'boss@evilexample.com', subject => 'urgent: wire the money',
             uas => { pager => $ANSWER, mobile => $ANSWER, callee => $ANSWER, vm => $ANSWER },
             code => 200, at => 'vm');
    $t->call(%base, label => "$P §16.10 spam", user => "hybrid-$tr", caller => 'offers@spam.test',
             display => '"Spam King"', uas => { vm => $ANSWER }, code => 486, reason => qr/^No spam, thanks$/);
    $t->call(%base, label => "$P §16.10 anyone else", user => "hybrid-$tr", caller => 'friend@other.test',
             uas => { callee => $ANSWER, vm => $ANSWER }, code => 200, at => 'vm');
}

ok($t->options_ok('udp') && $t->options_ok('tcp'), 'server still answers OPTIONS over UDP and TCP');
is($t->engine_pid, $engine0, 'the SIP engine was not restarted');
$t->dump_log_on_failure;
$t->stop;
done_testing;
