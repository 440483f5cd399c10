#!/usr/bin/perl
# Issue 12 end to end, on two servers sharing one PostgreSQL database
# (SipLocation dbd): a user uploads a forwarding SIP-CGI script with the
# shipped tool (tools/sip-script) on node A; a sipp call to that user on
# node B is redirected by it, run as SipUploadUser in the sandbox; the
# script is fetched on B and removed there, and node A stops running it.
# Only REGISTER needs credentials here (Require valid-user in <Limit>), so
# the sipp caller needs none.  Needs root (setuid helper, test user).
use strict;
use warnings;
use Test::More;
use File::Copy ();
use File::Temp qw(tempdir);
use SipTest qw(free_port);
use SipRegTest;
use SipDigest qw(write_htdigest);

plan skip_all => 'needs root (setuid helper, a dedicated user)' if $> != 0;
plan skip_all => 'needs bubblewrap (/usr/bin/bwrap)' unless -x '/usr/bin/bwrap';

my ($UPLOAD_USER) = SipRegTest::upload_user();
my (undef, undef, $www_uid, $www_gid) = getpwnam('www-data');
my $TOOL = SipTest::repo() . '/tools/sip-script';
my $HELPER = SipTest::repo() . '/tools/sip-suexec';
ok(-x $TOOL && -x $HELPER, 'tools/sip-script and tools/sip-suexec built') or BAIL_OUT('run make first');
my $MODDIR = $SipTest::MODDIR;

# ------------------------------------------------ PostgreSQL for both nodes
my $pgsrv = SipRegTest::postgres_start();

# ------------------------------------------------ the two nodes
my $realm = 'nodes.test';
sub node {
    return SipRegTest->new(
        server_conf => join("\n",
            "LoadModule dbd_module $MODDIR/mod_dbd.so",
            "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
            "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
            "LoadModule authz_user_module $MODDIR/mod_authz_user.so",
            'DBDriver pgsql', "DBDParams \"$pgsrv->{params}\"",
            'SipLocation dbd',
            "SipUploadUser $UPLOAD_USER", 'SipUploadWorkDir @DIR@/work',
            'SipUploadSuexec @DIR@/bin/sip-suexec', 'SipUploadInterpreters /bin/sh /usr/bin/perl',
            '<Location "/">', "    AuthName \"$realm\"", '    AuthUserFile @DIR@/users.htdigest',
            '    <Limit REGISTER>', '        Require valid-user', '    </Limit>', '</Location>', ''),
        vhost_conf => 'SipScriptUpload On',
        setup => sub {
            my $dir = $_[0]->dir;
            write_htdigest("$dir/users.htdigest", $realm, alice => 'wonder');
            mkdir "$dir/bin", 0755;
            File::Copy::copy($HELPER, "$dir/bin/sip-suexec") or die "copy: $!";
            chown 0, $www_gid, "$dir/bin/sip-suexec";
            chmod 04750, "$dir/bin/sip-suexec";
        });
}
my $a = node();
my $b = node();
like($b->error_log, qr/uploaded SIP-CGI scripts run as \Q$UPLOAD_USER\E/, 'node B can run uploaded scripts');

my $tmp = tempdir('mod_sip_nodes_XXXXXX', TMPDIR => 1, CLEANUP => 1);
sub tool {
    my ($node, @args) = @_;
    my $pw = $args[0] eq '--password' ? (splice(@args, 0, 2))[1] : 'wonder';
    my $out = `$^X $TOOL --server 127.0.0.1:@{[ $node->sip_port ]} --aor sip:alice\@127.0.0.1 --user alice --password $pw @args 2>&1`;
    return ($? >> 8, $out);
}
# alice@127.0.0.1 is the AoR on both nodes (the port is not part of it)
my $fwd = "$tmp/forward.sh";
open(my $f, '>', $fwd) or die;
print $f "#!/bin/sh\n# forward every call to voicemail\n"
       . "printf 'SIP/2.0 302 Moved Temporarily\\nContact: <sip:vm\@127.0.0.1:5999>;expires=60;q=1\\n\\n'\n";
close $f;

my ($rc, $out) = tool($a, '--tcp', 'upload', $fwd);
is($rc, 0, 'node A: sip-script uploads the forwarding script') or diag($out);

# the call on node B: sipp is redirected by the script uploaded on A
for my $tr (qw(u1 t1)) {
    my $uac = $b->rsipp_start(name => "fwd-$tr", sf => 'reg-uac-302.xml', transport => $tr, m => 1,
                              service => 'alice', remote => '127.0.0.1:' . $b->sip_port);
    $b->rsipp_ok($uac, label => "node B $tr: sipp call");
    my ($r) = grep { $_->is_final } SipRegTest::rsipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
    is($r && $r->code, 302, "node B $tr: 302 from the script uploaded on node A");
    like($r ? $r->header('contact') : '', qr/^<sip:vm\@127\.0\.0\.1:5999>/, "node B $tr: to voicemail");
}

($rc, $out) = tool($b, '--udp', 'fetch', '--output', '-');
is($rc, 0, 'node B: sip-script fetches it');
like($out, qr/forward every call to voicemail/, 'node B: the script uploaded on A');

($rc, $out) = tool($b, '--tcp', 'remove', 'sip-cgi');
is($rc, 0, 'node B: sip-script removes it') or diag($out);
my $m = $a->request_to('alice', method => 'INVITE');
ok($m && $m->code != 302, 'node A: the script removed on B no longer runs (' . ($m ? $m->code : 'none') . ')');
is($m && $m->code, 404, 'node A: alice has no binding and no script: 404');

# wrong password: nothing stored on either node
($rc, $out) = tool($a, '--password', 'wrong', 'upload', $fwd);
isnt($rc, 0, 'a wrong password: sip-script fails');
like($out, qr/\b(401|403)\b/, '... with the refusal\'s status line') or diag($out);
$m = $b->request_to('alice', method => 'INVITE');
is($m && $m->code, 404, 'a wrong password stores nothing (node B still 404)');

$a->stop;
$b->stop;
ok($pgsrv->{stop}->('fast'), 'PostgreSQL stopped');
done_testing;
