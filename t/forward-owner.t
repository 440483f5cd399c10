#!/usr/bin/perl
# A forwarding file's "|program" runs as the file's owner (issue 15 item
# 4; docs/routing.md "Forwarding files"): through sip-suexec --owner,
# with the checks of Apache's suexec.  Real unprivileged users are made
# for the test (useradd, removed at the end): the program writes `id -u`
# where the test reads it and answers the call, so the test sees it ran
# as its owner, not as www-data, in a clean environment, with the owner's
# groups, in the owner's home.  Refused, each with a log line, the normal
# handling answering (404) and no program run: a group-writable program,
# a program of another user, a file owned by another user, a file that is
# a symlink to another user's file, a program that is a symlink, an owner
# below SipForwardMinUid.  The engine's containment holds for the
# program: SipScriptTimeout or a CANCEL ends it and what it started,
# SipScriptMaxOutput one that writes without end, no zombies.
# Then the helper on its own, as the engine runs it (as www-data): its
# refusals cannot be reached through httpd, whose checks come first.
use strict;
use warnings;
use Test::More;
use File::Copy ();
use POSIX ();
use Time::HiRes qw(sleep);
use SipTest qw(wait_until);
use SipCgiTest qw(rand_token);

plan skip_all => 'needs root (setuid helper, users of its own)' if $> != 0;

my (undef, undef, $www_uid, $www_gid) = getpwnam('www-data');
my $helper_src = SipTest::repo() . '/tools/sip-suexec';
ok(-x $helper_src, 'tools/sip-suexec built') or BAIL_OUT('run make first');

# ---- users of the test's own (uid >= 1000), a home each under the test's dir
my @made;
END { system('userdel', $_) for @made }
my $t = SipCgiTest->new(start => 0);
my $home_root = $t->dir . '/home';
mkdir $home_root, 0755 or die "mkdir: $!";
chmod 0755, $home_root;

sub mkuser {
    my ($tag, @opt) = @_;
    my $name = "sfo$tag" . lc(rand_token(5));
    $name =~ s/[^a-z0-9]/x/g;
    my $home = "$home_root/$name";
    for my $try (1 .. 20) {             # /etc/passwd may be locked by someone else's useradd
        last if system('useradd', @opt, '--home-dir', $home, '--create-home', '--shell', '/bin/sh',
                       '--groups', 'users', $name) == 0;
        sleep 0.25;
    }
    my (undef, undef, $uid, $gid) = getpwnam($name);
    BAIL_OUT("cannot create the test user $name") unless defined $uid;
    push @made, $name;
    chmod 0755, $home;
    mkdir "$home/bin", 0755;
    chown $uid, $gid, "$home/bin";
    return { name => $name, uid => $uid, gid => $gid, home => $home };
}
my $bob = mkuser('b');
my $carol = mkuser('c');
# a system account (uid below 1000): SipForwardMinUid 100 lets the engine
# start its program, and the helper, built with a floor of 1000, refuses
my $sys = mkuser('s', '--system');
ok($sys->{uid} < 1000 && $sys->{uid} >= 100, "a system account $sys->{name} ($sys->{uid})");
ok($bob->{uid} >= 1000 && $carol->{uid} >= 1000, "test users $bob->{name} ($bob->{uid}) and "
   . "$carol->{name} ($carol->{uid}) are not system accounts");

# The helper as make install puts it: root:www-data 4750.
my $bin = $t->dir . '/bin';
mkdir $bin, 0755;
my $helper = "$bin/sip-suexec";
File::Copy::copy($helper_src, $helper) or die "copy: $!";
chown 0, $www_gid, $helper;
chmod 04750, $helper;

my $var = $t->var;      # 01777: the programs leave their marks here

sub put {
    my ($path, $text, $mode, $u) = @_;
    unlink $path;
    open(my $fh, '>', $path) or die "write $path: $!";
    print $fh $text;
    close $fh;
    chmod $mode, $path;
    chown $u->{uid}, $u->{gid}, $path if $u;
    return $path;
}

# the program: where it ran, as whom, with what; then a SIP-CGI answer
my $prog_text = <<'EOS';
#!/bin/sh
mark="$1"
id -u > "$mark.tmp"
{ echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"; echo "cwd=$(pwd)"
  env; } > "$mark.env"
mv "$mark.tmp" "$mark"
printf 'SIP/2.0 486 Busy Here\nX-Uid: %s\nX-Arg: %s\n\n' "$(id -u)" "$2"
EOS
my $bob_prog = put("$bob->{home}/bin/away.sh", $prog_text, 0755, $bob);
my $carol_prog = put("$carol->{home}/bin/away.sh", $prog_text, 0755, $carol);
put("$carol->{home}/.sipforward", "|$carol_prog $var/carol-ran\n", 0644, $carol);

sub bob_forward {
    my ($line, %o) = @_;
    my $f = "$bob->{home}/.sipforward";
    unlink $f;
    if ($o{symlink}) {
        symlink($o{symlink}, $f) or die "symlink: $!";
        return;
    }
    put($f, "# away this week\n$line\n", $o{mode} // 0644, $o{owner} // $bob);
}

$t->{vhost_conf} = "SipForwardFile ~/.sipforward\nSipScriptTimeout 2\nSipScriptMaxOutput 65536\n"
    . "SipForwardMinUid 100";
$t->{server_conf} = "SipUploadSuexec $helper\nSipLogRateLimit 0";
$t->start;
my $us = '127.0.0.1:' . $t->sip_port;
my $uac = $t->peer(name => 'uac');

sub call {
    my ($user) = @_;
    my $inv = $uac->invite(uri => "sip:$user\@$us");
    my $fin = $uac->final_for($inv, 6);
    $uac->ack($inv, $fin) if $fin;
    return $fin;
}

sub env_of {
    my ($mark) = @_;
    open(my $fh, '<', "$mark.env") or return {};
    my %e = map { chomp; /^([^=]+)=(.*)$/ ? ($1 => $2) : () } <$fh>;
    return \%e;
}

# ---- it runs, as bob
{
    my $mark = "$var/bob-ran";
    bob_forward("|$bob_prog $mark hello");
    my $log = $t->log_mark;
    my $fin = call($bob->{name});
    is($fin && $fin->code, 486, '|program of a user-owned ~/.sipforward: its answer comes back');
    is($fin && $fin->header('x-uid'), $bob->{uid}, '... it ran as the file\'s owner');
    is($fin && $fin->header('x-arg'), 'hello', '... with its arguments from the file');
    ok(-f $mark, '... and left its mark') or diag(join '', $t->log_since($log));
    chomp(my $uid = `cat $mark 2>/dev/null`);
    is($uid, $bob->{uid}, "... id -u is $bob->{uid}, not www-data's $www_uid");
    is((stat $mark)[4], $bob->{uid}, '... the file it wrote is the owner\'s');
    my $e = env_of($mark);
    is($e->{gid}, $bob->{gid}, '... with the owner\'s group');
    my %groups = map { $_ => 1 } split ' ', $e->{groups} // '';
    ok($groups{100} && !$groups{$www_gid} && !$groups{0},
       '... and its supplementary groups (initgroups: users), not www-data\'s or root\'s')
        or diag("groups: " . ($e->{groups} // ''));
    is($e->{cwd}, $bob->{home}, '... in the owner\'s home');
    is($e->{PATH}, '/usr/local/bin:/usr/bin:/bin', '... with a fixed PATH');
    is($e->{HOME}, $bob->{home}, '... HOME');
    is($e->{USER}, $bob->{name}, '... USER');
    is($e->{REQUEST_METHOD}, 'INVITE', '... and the SIP-CGI variables');
    like($e->{SIP_CALL_ID} // '', qr/\S/, '... SIP_<header> among them');
    # (the shell adds PWD, SHLVL, _ and OLDPWD itself)
    my $cgi = qr/SIP_\w+|GATEWAY_INTERFACE|SERVER_\w+|REMOTE_\w+|REQUEST_\w+|RESPONSE_\w+|
                 SCRIPT_COOKIE|AUTH_TYPE|REGISTRATIONS|CONTENT_\w+/x;
    my @other = grep { !/^(?:uid|gid|groups|cwd|PATH|HOME|USER|LOGNAME|PWD|SHLVL|_|OLDPWD|$cgi)$/ }
                keys %$e;
    is("@other", '', '... nothing else of httpd\'s environment');
    ok($t->wait_log($log, qr/runs \Q$bob_prog\E as uid $bob->{uid} \(its owner\)/),
       '... and the run is logged');
    unlink $mark, "$mark.env";
}

# ---- refusals: logged, the normal handling answers, nothing runs
my $other_prog = put("$carol->{home}/bin/carols.sh", $prog_text, 0755, $carol);
symlink($bob_prog, "$bob->{home}/bin/link.sh") or die "symlink: $!";
lchown($bob, "$bob->{home}/bin/link.sh");
my @refused = (
    [ 'a group-writable program', sub { chmod 0775, $bob_prog; bob_forward("|$bob_prog MARK") },
      qr/the program is writable by group or others/, sub { chmod 0755, $bob_prog } ],
    [ 'a program of another user', sub { bob_forward("|$other_prog MARK") },
      qr/the program belongs to someone else/ ],
    [ 'a program that is a symlink', sub { bob_forward("|$bob->{home}/bin/link.sh MARK") },
      qr/the program is a symbolic link/ ],
    [ 'a program in a group-writable directory',
      sub { chmod 0775, "$bob->{home}/bin"; bob_forward("|$bob_prog MARK") },
      qr/a directory on the way is writable by group or others/,
      sub { chmod 0755, "$bob->{home}/bin" } ],
    [ 'a setuid program', sub { chmod 04755, $bob_prog; bob_forward("|$bob_prog MARK") },
      qr/the program is setuid or setgid/, sub { chmod 0755, $bob_prog } ],
    [ 'a file owned by another user', sub { bob_forward("|$bob_prog MARK", owner => $carol) },
      qr/it is owned by uid $carol->{uid}, not by its user/ ],
    [ 'a file that is a symlink to another user\'s file',
      sub { bob_forward('', symlink => "$carol->{home}/.sipforward") }, qr/it is a symbolic link/ ],
    [ 'a group-writable file', sub { bob_forward("|$bob_prog MARK", mode => 0664) },
      qr/it is writable by group or others/ ],
);
for my $case (@refused) {
    my ($what, $setup, $why, $undo) = @$case;
    my $mark = "$var/refused-" . rand_token(6);
    $setup->();
    if (-f "$bob->{home}/.sipforward" && !-l "$bob->{home}/.sipforward") {
        my $f = "$bob->{home}/.sipforward";
        my $mode = (stat $f)[2] & 07777;
        my $owner = (stat $f)[4];
        my $text = do { local (@ARGV, $/) = $f; <> };
        $text =~ s/MARK/$mark/;
        put($f, $text, $mode, $owner == $carol->{uid} ? $carol : $bob);
    }
    my $log = $t->log_mark;
    my $fin = call($bob->{name});
    is($fin && $fin->code, 404, "refused, $what: the normal handling answers (404)");
    ok($t->wait_log($log, qr{forwarding file \Q$bob->{home}/.sipforward\E refused for INVITE .*$why}),
       '... with the reason in the log')
        or diag(join '', $t->log_since($log));
    sleep 0.2;
    ok(!-e $mark && !-e "$var/carol-ran", '... and no program ran');
    $undo->() if $undo;
}

# ---- the helper has the last word: its own floor (1000) is above
# SipForwardMinUid 100, so the engine starts the program and the helper
# refuses: the reason is logged and the call gets 500, as for a failing
# script
{
    my $mark = "$var/sys-ran";
    my $prog = put("$sys->{home}/bin/away.sh", $prog_text, 0755, $sys);
    put("$sys->{home}/.sipforward", "|$prog $mark\n", 0644, $sys);
    my $log = $t->log_mark;
    my $fin = call($sys->{name});
    is($fin && $fin->code, 500, 'an owner below the helper\'s floor: 500');
    ok($t->wait_log($log, qr{sip-suexec: forwarding file \Q$sys->{home}/.sipforward\E refused: .*below the min}),
       '... with the helper\'s reason in the log')
        or diag(join '', $t->log_since($log));
    ok(!-e $mark, '... and the program did not run');
}

# ---- containment: SipScriptTimeout ends the program and what it started
{
    my $pidfile = "$var/sleeper.pid";
    my $sleeper = put("$bob->{home}/bin/sleeper.sh",
                      "#!/bin/sh\nsleep 300 &\necho \$! > $pidfile\nsleep 300\n", 0755, $bob);
    bob_forward("|$sleeper");
    my $log = $t->log_mark;
    my $fin = call($bob->{name});
    is($fin && $fin->code, 500, 'a program that does not answer: 500 after SipScriptTimeout');
    ok($t->wait_log($log, qr/timed out/), '... logged as timed out')
        or diag(join '', $t->log_since($log));
    ok(wait_until(3, sub { !user_procs($bob->{uid}) }, 0.1),
       '... and nothing of the owner\'s is left running (its background child included)')
        or diag(join "\n", map { "$_->{pid} $_->{cmd}" } user_procs($bob->{uid}));
}

# ... a CANCEL ends it too (487), with what it started
{
    my $pidfile = "$var/cancel.pid";
    my $sleeper = put("$bob->{home}/bin/sleeper2.sh",
                      "#!/bin/sh\nsleep 300 &\necho \$! > $pidfile\nsleep 300\n", 0755, $bob);
    bob_forward("|$sleeper");
    my $inv = $uac->invite(uri => "sip:$bob->{name}\@$us");
    ok(wait_until(3, sub { -s $pidfile && user_procs($bob->{uid}) >= 2 }, 0.05),
       'a program that does not answer is running, with a background child');
    $uac->cancel($inv);
    my $fin = $uac->final_for($inv, 3);
    is($fin && $fin->code, 487, '... a CANCEL ends the call (487)');
    $uac->ack($inv, $fin) if $fin;
    ok(wait_until(3, sub { !user_procs($bob->{uid}) }, 0.1),
       '... and the program and its background child are gone')
        or diag(join "\n", map { "$_->{pid} $_->{cmd}" } user_procs($bob->{uid}));
}

# ... and SipScriptMaxOutput a program that writes without end
{
    my $chatty = put("$bob->{home}/bin/chatty.sh", "#!/bin/sh\nexec yes 'X-Filler: 0123456789'\n",
                     0755, $bob);
    bob_forward("|$chatty");
    my $log = $t->log_mark;
    my $fin = call($bob->{name});
    is($fin && $fin->code, 500, 'a program that writes without end: 500');
    ok($t->wait_log($log, qr/output exceeds SipScriptMaxOutput/), '... at SipScriptMaxOutput')
        or diag(join '', $t->log_since($log));
    ok(wait_until(3, sub { !user_procs($bob->{uid}) }, 0.1), '... and it is gone')
        or diag(join "\n", map { "$_->{pid} $_->{cmd}" } user_procs($bob->{uid}));
}

sub user_procs {
    my ($uid) = @_;
    return grep { my @s = stat "/proc/$_->{pid}"; @s && $s[4] == $uid } SipTest::procs();
}

sub lchown {
    my ($u, $path) = @_;
    system('chown', '-h', "$u->{uid}:$u->{gid}", $path) == 0 or die "chown -h $path";
}

$t->stop;

# ---- SipForwardFile with %u, and SipForwardMinUid
{
    my ($lo, $hi) = sort { $a->{uid} <=> $b->{uid} } ($bob, $carol);
    my $t2 = SipCgiTest->new(start => 0);
    my $fwd = $t2->dir . '/fwd';
    mkdir $fwd, 0755;
    chmod 0755, $fwd;
    my $bin2 = $t2->dir . '/bin';
    mkdir $bin2, 0755;
    my $helper2 = "$bin2/sip-suexec";
    File::Copy::copy($helper_src, $helper2) or die "copy: $!";
    chown 0, $www_gid, $helper2;
    chmod 04750, $helper2;
    my $var2 = $t2->var;
    my $lo_prog = put("$lo->{home}/bin/away.sh", $prog_text, 0755, $lo);
    my $hi_prog = put("$hi->{home}/bin/away.sh", $prog_text, 0755, $hi);
    put("$fwd/$hi->{name}", "|$hi_prog $var2/hi-ran dir\n", 0644, $hi);
    put("$fwd/$lo->{name}", "|$lo_prog $var2/lo-ran dir\n", 0644, $lo);
    # httpd's own file: its program runs as httpd, as before
    my $www_prog = put("$bin2/www.sh", $prog_text, 0755);
    put("$fwd/wwwuser", "|$www_prog $var2/www-ran dir\n", 0644,
        { uid => $www_uid, gid => $www_gid });
    $t2->{vhost_conf} = "SipForwardFile \@DIR\@/fwd/%u\nSipForwardMinUid $hi->{uid}";
    $t2->{server_conf} = "SipUploadSuexec $helper2\nSipLogRateLimit 0";
    $t2->start;
    my $us2 = '127.0.0.1:' . $t2->sip_port;
    my $uac2 = $t2->peer(name => 'uac2');
    my $call2 = sub {
        my $inv = $uac2->invite(uri => "sip:$_[0]\@$us2");
        my $fin = $uac2->final_for($inv, 6);
        $uac2->ack($inv, $fin) if $fin;
        return $fin;
    };
    my $fin = $call2->($hi->{name});
    is($fin && $fin->code, 486, 'SipForwardFile /dir/%u: a file of its user runs the program');
    is($fin && $fin->header('x-uid'), $hi->{uid}, '... as that user');
    chomp(my $uid = `cat $var2/hi-ran 2>/dev/null`);
    is($uid, $hi->{uid}, '... (id -u)');
    my $log = $t2->log_mark;
    $fin = $call2->($lo->{name});
    is($fin && $fin->code, 404, "an owner below SipForwardMinUid ($lo->{uid} < $hi->{uid}): the "
       . 'normal handling answers');
    ok($t2->wait_log($log, qr{forwarding file \Q$fwd/$lo->{name}\E refused .*below the minimum}),
       '... logged') or diag(join '', $t2->log_since($log));
    ok(!-e "$var2/lo-ran", '... and the program did not run');
    $fin = $call2->('wwwuser');
    is($fin && $fin->header('x-uid'), $www_uid,
       'a file of httpd\'s own user: run as httpd, as before');
    $t2->stop;
}

# ---- the helper on its own, run as www-data as the engine runs it
sub helper {
    my ($env, @args) = @_;
    my $out = $t->dir . '/helper.out';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $out);
        open(STDERR, '>&', \*STDOUT);
        $) = "$www_gid $www_gid";
        $( = $www_gid;
        $< = $> = $www_uid;
        %ENV = %$env;
        exec($helper, @args) or POSIX::_exit(127);
    }
    waitpid($pid, 0);
    my $st = $? >> 8;
    my $text = do { local (@ARGV, $/) = $out; <> } // '';
    return ($st, $text);
}
{
    my $mark = "$var/direct-ran";
    my $file = "$bob->{home}/.sipforward";
    chmod 0755, $bob_prog;
    put($file, "|$bob_prog $mark direct\n", 0644, $bob);
    my %env = (REQUEST_METHOD => 'INVITE', SIP_FROM => '<sip:a@b>', FOO => 'bar',
               PATH => '/evil', IFS => 'x', PERL5LIB => '/evil', BASH_ENV => '/evil/x');
    my @lim = ('-', '-', '-');
    my ($st, $out) = helper(\%env, '--owner', $bob->{uid}, 1000, '~/.sipforward', $file, @lim);
    is($st, 0, 'sip-suexec --owner runs the file\'s program') or diag($out);
    like($out, qr/^SIP\/2\.0 486.*X-Uid: $bob->{uid}\n/s, '... as its owner');
    my $e = env_of($mark);
    ok(!exists $e->{FOO} && !exists $e->{IFS} && !exists $e->{PERL5LIB} && !exists $e->{BASH_ENV}
       && $e->{PATH} eq '/usr/local/bin:/usr/bin:/bin' && $e->{SIP_FROM} eq '<sip:a@b>'
       && $e->{REQUEST_METHOD} eq 'INVITE',
       '... with only the SIP-CGI variables of its environment')
        or diag(explain $e);
    unlink $mark, "$mark.env";

    my @cases = (
        [ 'a minimum above the owner', [ $bob->{uid}, $bob->{uid} + 1, '~/.sipforward', $file ],
          qr/below the minimum/ ],
        [ 'root', [ 0, 1000, '~/.sipforward', '/root/.sipforward' ], qr/would run as root/ ],
        [ 'a system account, even with MINUID 1',
          [ 1, 1, '~/.sipforward', '/usr/sbin/.sipforward' ],
          qr/below the minimum/ ],
        [ 'a file not where the template puts the owner\'s',
          [ $bob->{uid}, 1000, '~/.sipforward', "$carol->{home}/.sipforward" ],
          qr/not the owner's forwarding file/ ],
        [ 'a template directory that is not root\'s',
          [ $bob->{uid}, 1000, "$bob->{home}/%u", "$bob->{home}/$bob->{name}" ],
          qr/SipForwardFile's directory is not root's alone/ ],
        [ 'a path with ..', [ $bob->{uid}, 1000, '~/.sipforward', "$bob->{home}/../x/.sipforward" ],
          qr/not the owner's forwarding file/ ],
    );
    for my $c (@cases) {
        my ($what, $args, $re) = @$c;
        my ($st2, $out2) = helper(\%env, '--owner', @$args, @lim);
        ok($st2 == 126 && $out2 =~ $re && $out2 !~ /X-Uid/, "sip-suexec --owner refuses $what")
            or diag("status $st2: $out2");
    }
    # file and program checks, with the file in place
    my @file_cases = (
        [ 'a symlink to another user\'s file',
          sub { unlink $file; symlink("$carol->{home}/.sipforward", $file) },
          qr/symbolic link/ ],
        [ 'a file of another user', sub { put($file, "|$bob_prog $mark\n", 0644, $carol) },
          qr/not the owner's/ ],
        [ 'a group-writable file', sub { put($file, "|$bob_prog $mark\n", 0664, $bob) },
          qr/writable by group or others/ ],
        [ 'a group-writable program', sub { put($file, "|$bob_prog $mark\n", 0644, $bob); chmod 0775, $bob_prog },
          qr/the program is writable by group or others/ ],
        [ 'a program of another user', sub { chmod 0755, $bob_prog; put($file, "|$other_prog $mark\n", 0644, $bob) },
          qr/the program belongs to someone else/ ],
        [ 'a relative program', sub { put($file, "|away.sh $mark\n", 0644, $bob) },
          qr/needs an absolute path/ ],
        [ 'addresses beside the program', sub { put($file, "sip:x\@y\n|$bob_prog $mark\n", 0644, $bob) },
          qr/must be the only entry/ ],
    );
    for my $c (@file_cases) {
        my ($what, $setup, $re) = @$c;
        $setup->();
        my ($st2, $out2) = helper(\%env, '--owner', $bob->{uid}, 1000, '~/.sipforward', $file, @lim);
        ok($st2 == 126 && $out2 =~ $re && !-e $mark, "sip-suexec --owner refuses $what")
            or diag("status $st2: $out2");
    }
    ok(!-e "$var/carol-ran", 'carol\'s program never ran');
}
done_testing;
