#!/usr/bin/perl
# Users' uploaded SIP-CGI scripts (issue 12 item 6): they run for calls to
# their owner before SipDirectory's script, as SipUploadUser (never root
# or www-data) through the setuid helper sip-suexec, in a bubblewrap
# sandbox that shows them nothing of the server (script store, location
# journal, SipDirectory, httpd configuration, other users' working
# directories, /etc/shadow) and no network; RLimitCPU and SipScriptTimeout
# end them; removing the script restores SipDirectory's; a script that
# cannot run gets 500 and a log line, never SipDirectory's script instead.
#
# Scripts are placed directly in the file store (sip_script_store.c's
# format).  Needs root: httpd drops to www-data, the helper is installed
# setuid root:www-data 4750 in the test's directory.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha1_hex);
use File::Copy ();
use File::Temp ();
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg wait_until);
use SipCgiTest ();
use SipRegTest ();

plan skip_all => 'needs root (setuid helper, a dedicated user)' if $> != 0;
plan skip_all => 'needs bubblewrap (/usr/bin/bwrap)' unless -x '/usr/bin/bwrap';

my ($UPLOAD_USER, $up_uid, $up_gid) = SipRegTest::upload_user();    # TEST_UPLOAD_USER
my (undef, undef, $www_uid, $www_gid) = getpwnam('www-data');
my $helper_src = SipTest::repo() . '/tools/sip-suexec';
ok(-x $helper_src, 'tools/sip-suexec built') or BAIL_OUT('run make first');

my $HOST = '127.0.0.1';

# A copy of the helper as make install makes it: root:www-data 4750.
sub install_helper {
    my ($t, $name, $mode) = @_;
    my $bin = $t->dir . '/bin';
    mkdir $bin, 0755 unless -d $bin;
    my $path = "$bin/$name";
    File::Copy::copy($helper_src, $path) or die "copy: $!";
    chown 0, $www_gid, $path;
    chmod $mode, $path;
    return $path;
}

# The file store's format (sip_script_store.c): one directory per AoR named
# by the SHA-1 of the AoR, one file per type, owned by httpd's user.
sub store_script {
    my ($t, $aor, $body, %o) = @_;
    my $dir = $t->dir . '/store/' . sha1_hex($aor);
    mkdir $dir, 0700 unless -d $dir;
    chown $www_uid, $www_gid, $dir;
    my $type = $o{type} // 'sip-cgi';
    my $file = "$dir/$type";
    open(my $fh, '>', "$file.new") or die "$file: $!";
    binmode $fh;
    printf $fh "SIPSCRIPT 1\naor: %s\ntype: %s\ncontent-type: %s\nmtime: %d\nlength: %d\n\n%s",
        $aor, $type, $o{content_type} // 'application/x-sh', time, length($body), $body;
    close $fh;
    chown $www_uid, $www_gid, "$file.new";
    chmod 0600, "$file.new";
    rename "$file.new", $file or die "rename: $!";
    return $file;
}

sub remove_script {
    my ($t, $aor) = @_;
    unlink $t->dir . '/store/' . sha1_hex($aor) . '/sip-cgi';
}

sub call {
    my ($t, $user, %o) = @_;
    my $port = $t->sip_port;
    my $req = $t->sip_request(method => $o{method} // 'INVITE',
                              uri => "sip:$user\@$HOST:$port", %{ $o{req} || {} });
    my $t0 = time;
    my @r = $t->udp_req($req, $o{timeout} // 8);
    my $final = (grep { $_->is_final } @r)[-1];
    return ($final, time - $t0);
}

sub server_conf {
    my (%o) = @_;
    my $suexec = $o{suexec} // '@DIR@/bin/sip-suexec';
    return join("\n",
        'SipScriptStore @DIR@/store',
        "SipUploadUser $UPLOAD_USER",
        'SipUploadWorkDir @DIR@/work',
        "SipUploadSuexec $suexec",
        'SipUploadInterpreters /bin/sh /usr/bin/perl',
        'SipUploadSandbox ' . ($o{sandbox} // 'On'),
        'SipUploadTmpSize 1048576',
    );
}

my %dir_scripts = (
    # SipDirectory's script for alice: what runs when she has no upload
    "alice\@$HOST" => "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\nX-Who: directory\\n\\n'\n",
);

my $id_script = <<'EOS';
#!/bin/sh
printf 'SIP/2.0 486 Busy Here\nX-Who: uploaded\nX-Uid: %s\nX-Gid: %s\nX-Groups: %s\nX-Cwd: %s\nX-Method: %s\n\n' \
    "$(id -u)" "$(id -g)" "$(id -G)" "$(pwd)" "$REQUEST_METHOD"
EOS

# ---------------------------------------------- the helper on its own
# Run as www-data, as the engine runs it; every refusal exits 126 with a
# reason on stderr and starts nothing.
{
    my $dir = File::Temp::tempdir('mod_sip_suexec_XXXXXX', DIR => '/tmp', CLEANUP => 1);
    chmod 0755, $dir;
    my $helper = "$dir/sip-suexec";
    File::Copy::copy($helper_src, $helper) or die "copy: $!";
    chown 0, $www_gid, $helper;
    chmod 04750, $helper;
    mkdir "$dir/work", 0700;
    chown $up_uid, $up_gid, "$dir/work";
    mkdir "$dir/var", 01777;
    chmod 01777, "$dir/var";
    my $marker = "$dir/var/ran";
    my $cmd = "/bin/sh -c 'touch $marker; id -u; id -G; pwd'";
    my $run = sub {
        my ($args, $fd3) = @_;
        unlink $marker;
        my $out = `su -s /bin/sh www-data -c "$helper $args $cmd 3<${\ ($fd3 // '/dev/null')}" 2>&1`;
        return ($? >> 8, $out, -e $marker);
    };
    my ($rc, $out, $ran) = $run->("$UPLOAD_USER $dir/work/u1 - - -");
    is($rc, 0, 'helper: runs the command for www-data');
    is($out, "$up_uid\n$up_gid\n$dir/work/u1\n", '... as the user, with only its group, in its new working directory');
    my @st = stat("$dir/work/u1");
    is_deeply([$st[4], $st[2] & 07777], [$up_uid, 0700], '... which it made as the user, mode 0700');
    my %refused = (
        'root as target'         => "root $dir/work/u1 - - -",
        'a system account'       => "daemon $dir/work/u1 - - -",
        'an unknown user'        => "no-such-user-xyz $dir/work/u1 - - -",
        'a relative directory'   => "$UPLOAD_USER work/u1 - - -",
        'a .. in the directory'  => "$UPLOAD_USER $dir/work/../u1 - - -",
        'a bad limit'            => "$UPLOAD_USER $dir/work/u1 1 - -",
        'a limit soft > hard'    => "$UPLOAD_USER $dir/work/u1 5:2 - -",
        'a negative limit'       => "$UPLOAD_USER $dir/work/u1 -1:2 - -",
        'a directory elsewhere'  => "$UPLOAD_USER /etc/sipx - - -",
    );
    for my $k (sort keys %refused) {
        ($rc, $out, $ran) = $run->($refused{$k});
        ok($rc == 126 && !$ran && $out =~ /^sip-suexec: /, "helper refuses $k") or diag($out);
    }
    ok(!-e '/etc/sipx', '... and made nothing where the user may not write');
    ($rc, $out, $ran) = $run->("$UPLOAD_USER $dir/work/u1 - - -", '&-');
    ok($rc == 126 && !$ran, 'helper refuses without the script on descriptor 3');
    # a relative command
    $out = `su -s /bin/sh www-data -c "$helper $UPLOAD_USER $dir/work/u1 - - - sh -c true 3</dev/null" 2>&1`;
    is($? >> 8, 126, 'helper refuses a command that is not an absolute path');
    # not setuid: it says so rather than running anything as www-data
    chmod 0755, $helper;
    ($rc, $out, $ran) = $run->("$UPLOAD_USER $dir/work/u1 - - -");
    ok($rc == 126 && !$ran && $out =~ /not installed setuid root/, 'helper without setuid refuses');
    # built for one user (the default, make SIP_UPLOAD_USER=mod-sip-upload):
    # no other, not even an ordinary unprivileged one
    chmod 04750, $helper;
    unlink $marker;
    ($rc, $out, $ran) = $run->("nobody $dir/var/n1 - - -");
    ok($rc == 126 && !$ran && $out =~ /only/, 'the helper as built by default refuses any user but its own');
    $out = `su -s /bin/sh www-data -c "$helper $UPLOAD_USER $dir/work/u1 - - - $cmd 3</dev/null" 2>&1`;
    is($out, "$up_uid\n$up_gid\n$dir/work/u1\n", '... and runs as its user');
    # built with SIP_UPLOAD_USER= (empty): any user the checks allow
    system('cc', '-O2', '-o', "$dir/any", SipTest::repo() . '/tools/sip-suexec.c') == 0 or die 'cc failed';
    chown 0, $www_gid, "$dir/any";
    chmod 04750, "$dir/any";
    (my $any = $helper) =~ s/sip-suexec$/any/;
    unlink $marker;
    $out = `su -s /bin/sh www-data -c "$any nobody $dir/var/n2 - - - $cmd 3</dev/null" 2>&1`;
    like($out, qr/\A65534\n/, 'a helper built for no one user runs as any user it allows (nobody)') or diag($out);
    # limits reach the command
    $out = `su -s /bin/sh www-data -c "$helper $UPLOAD_USER $dir/work/u1 7:9 100000000:200000000 50:60 /bin/sh -c 'ulimit -t; ulimit -Ht; ulimit -v; grep processes /proc/self/limits' 3</dev/null" 2>&1`;
    like($out, qr/\A7\n9\n97656\nMax processes +50 +60 +processes/,
         'helper sets RLimitCPU, RLimitMEM (address space), RLimitNPROC');
}

# ---------------------------------------------------------------- sandbox On
{
    my $t = SipCgiTest->new(
        start => 0,
        scripts => \%dir_scripts,
        server_conf => server_conf(),
        vhost_conf => "SipScriptUpload On\nSipScriptTimeout 4\nRLimitCPU 1 2\nRLimitMEM 300000000",
    );
    my $helper = install_helper($t, 'sip-suexec', 04750);
    # the file system honours setuid (the helper says so when it is not root)
    my $out = `su -s /bin/sh www-data -c '$helper' 2>&1`;
    like($out, qr/usage/, 'the helper copy runs setuid root for www-data')
        or BAIL_OUT("setuid does not work in " . $t->dir . ": $out");
    $t->start;
    my $engine = $t->engine_pid;
    like($t->error_log, qr/uploaded SIP-CGI scripts run as \Q$UPLOAD_USER\E through .* in a bubblewrap sandbox/,
         'start-up: uploaded scripts can run (logged)');
    my @st = stat($t->dir . '/work');
    is_deeply([$st[4], $st[5], $st[2] & 07777], [$up_uid, $up_gid, 0700],
              'SipUploadWorkDir made: SipUploadUser\'s, mode 0700');

    my ($r) = call($t, 'alice');
    is($r && $r->header('X-Who'), 'directory', 'no upload: SipDirectory\'s script answers');

    my $alice = "sip:alice\@$HOST";
    store_script($t, $alice, $id_script);
    ($r) = call($t, 'alice');
    is($r && $r->code, 486, 'uploaded script answers the call');
    is($r && $r->header('X-Who'), 'uploaded', '... the uploaded one, not SipDirectory\'s');
    is($r && $r->header('X-Uid'), $up_uid, "... as SipUploadUser ($up_uid)");
    isnt($r && $r->header('X-Uid'), 0, '... not root');
    isnt($r && $r->header('X-Uid'), $www_uid, '... not www-data');
    is($r && $r->header('X-Gid'), $up_gid, '... with its group');
    is($r && $r->header('X-Groups'), $up_gid, '... and no other group');
    is($r && $r->header('X-Cwd'), '/work', '... in its own working directory');
    ok(-d $t->dir . '/work/' . sha1_hex($alice), 'the working directory is named by the AoR\'s hash');

    # a REGISTER never goes to an uploaded script (it must not lock its
    # owner out of replacing it): SipDirectory's script for her sees it
    my $port = $t->sip_port;
    ($r) = call($t, 'alice', method => 'REGISTER',
                req => { uri => "sip:$HOST:$port", to => "<sip:alice\@$HOST>",
                         headers => [Contact => "<sip:alice\@$HOST:5999>", Expires => 60] });
    is($r && $r->header('X-Who'), 'directory', 'her REGISTER passes her uploaded script by');

    # another user without upload is not affected; carol has nothing anywhere
    ($r) = call($t, 'carol');
    is($r && $r->code, 404, 'a user without any script: 404 as before');

    # ---- what the sandbox shows: bob keeps a secret in his working directory
    my $bob = "sip:bob\@$HOST";
    store_script($t, $bob, "#!/bin/sh\necho bob-secret > secret\nprintf 'SIP/2.0 480 Gone\\nX-Bob: '\n"
                           . "cat secret\nprintf '\\n'\n");
    ($r) = call($t, 'bob');
    is($r && $r->header('X-Bob'), 'bob-secret', 'bob\'s script writes and reads its working directory');
    my $bob_secret = $t->dir . '/work/' . sha1_hex($bob) . '/secret';
    ok(-f $bob_secret, '... which is on the host');

    my %targets = (
        Store   => $t->dir . '/store/' . sha1_hex($alice) . '/sip-cgi',
        Journal => $t->dir . '/run/sip-location.journal',
        Dir     => $t->scripts_dir . "/alice\@$HOST",
        Conf    => $t->conf_file,
        Bob     => $bob_secret,
        Shadow  => '/etc/shadow',
        Passwd  => '/etc/passwd',
    );
    ok(-e $targets{$_}, "$_ file exists on the host ($targets{$_})") for sort keys %targets;
    my $snoop = "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n'\n";
    for my $k (sort keys %targets) {
        $snoop .= "if cat '$targets{$k}' >/dev/null 2>&1; then r=read; "
                . "elif [ -e '$targets{$k}' ]; then r=visible; else r=absent; fi\n"
                . "printf 'X-$k: %s\\n' \"\$r\"\n";
    }
    # the control: what the script may read, it reads
    $snoop .= "echo mine > own; if cat own >/dev/null 2>&1; then r=read; else r=no; fi\n"
            . "printf 'X-Own: %s\\n' \"\$r\"\n"
            . "if cat /usr/bin/env >/dev/null 2>&1; then r=read; else r=no; fi\n"
            . "printf 'X-Usr: %s\\n' \"\$r\"\n"
            . "printf 'X-Procs: %s\\n' \"\$(ls /proc | grep -c '^[0-9]')\"\n"
            . "printf '\\n'\n";
    store_script($t, $alice, $snoop);
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Own'), 'read', 'snooping script: reads its own files (the check works)');
    is($r && $r->header('X-Usr'), 'read', '... and /usr');
    is($r && $r->header("X-$_"), 'absent', "... sees nothing of $_ ($targets{$_})")
        for sort keys %targets;
    my $host_procs = () = SipTest::procs();
    cmp_ok($r ? $r->header('X-Procs') : 99, '<=', 6,
           "... and only its own processes (of $host_procs on the host)");

    # ---- RLimitMEM 300 MB (address space): a script asking for more fails
    store_script($t, $alice, "#!/usr/bin/perl\nmy \$n = \$ENV{SIP_X_MB} * 1048576;\n"
        . "my \$x = 'a' x \$n;\nprint \"SIP/2.0 486 Busy Here\\nX-Got: \", length(\$x), \"\\n\\n\";\n",
        content_type => 'application/x-perl');
    ($r) = call($t, 'alice', req => { headers => ['X-MB' => 20] });
    is($r && $r->header('X-Got'), 20 * 1048576, 'RLimitMEM: a script may use 20 MB');
    ($r) = call($t, 'alice', req => { headers => ['X-MB' => 400] });
    is($r && $r->code, 500, '... but not 400 MB: 500');

    # ---- no new user namespaces inside (less of the kernel to attack)
    store_script($t, $alice, "#!/bin/sh\nif /usr/bin/unshare -U /bin/true 2>/dev/null; then r=yes; else r=no; fi\n"
        . "printf 'SIP/2.0 486 Busy Here\\nX-Userns: %s\\n\\n' \"\$r\"\n");
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Userns'), 'no', 'a script cannot make user namespaces of its own');

    # ---- SipUploadTmpSize 1 MB: the sandbox's /tmp is bounded
    store_script($t, $alice, "#!/bin/sh\nhead -c 500000 /dev/zero > /tmp/a && r1=ok || r1=full\n"
        . "head -c 2000000 /dev/zero > /tmp/b 2>/dev/null && r2=ok || r2=full\n"
        . "printf 'SIP/2.0 486 Busy Here\\nX-Small: %s\\nX-Big: %s\\n\\n' \"\$r1\" \"\$r2\"\n");
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Small'), 'ok', 'the sandbox\'s /tmp takes 500 kB');
    is($r && $r->header('X-Big'), 'full', '... but not 2 MB (SipUploadTmpSize 1048576)');

    # ---- no network: the script tries UDP to a listener of ours and TCP to
    # the server; bubblewrap gives it a network namespace of its own with
    # nothing but a loopback interface
    my $listener = IO::Socket::INET->new(LocalAddr => $HOST, LocalPort => 0, Proto => 'udp')
        or die "udp: $!";
    my $lport = $listener->sockport;
    store_script($t, $alice, <<"EOS", content_type => 'application/x-perl');
#!/usr/bin/perl
use Socket;
my \@r;
if (socket(my \$u, PF_INET, SOCK_DGRAM, 0)) {
    push \@r, send(\$u, "leak", 0, sockaddr_in($lport, inet_aton("$HOST"))) ? "udp-sent" : "udp-failed:\$!";
} else { push \@r, "udp-socket-failed:\$!"; }
if (socket(my \$c, PF_INET, SOCK_STREAM, 0)) {
    push \@r, connect(\$c, sockaddr_in($port, inet_aton("$HOST"))) ? "tcp-connected" : "tcp-failed:\$!";
} else { push \@r, "tcp-socket-failed:\$!"; }
open(my \$d, "<", "/proc/net/dev");
my \@if = map { /^\\s*([^:\\s]+):/ ? \$1 : () } <\$d>;
print "SIP/2.0 486 Busy Here\\nX-Net: ", join(" ", \@r), "\\nX-Ifaces: \@if\\n\\n";
EOS
    ($r) = call($t, 'alice');
    my $net = $r ? $r->header('X-Net') // '' : '';
    like($net, qr/tcp-(?:socket-)?failed/, "no network: TCP to the server fails ($net)");
    is($r && $r->header('X-Ifaces'), 'lo', '... the only interface is a loopback of its own');
    $listener->blocking(0);
    my $got = '';
    sleep 0.2;
    $listener->recv($got, 100);
    is($got, '', '... and its UDP datagram never arrived at our listener');

    # ---- RLimitCPU 1 2: a spinning script is killed, the call gets 500
    store_script($t, $alice, "#!/bin/sh\nwhile :; do :; done\n");
    my $mark = $t->log_mark;
    my $dt;
    ($r, $dt) = call($t, 'alice');
    is($r && $r->code, 500, 'a spinning script: 500');
    cmp_ok($dt, '<', 3.5, sprintf('... within the CPU limit, before SipScriptTimeout (%.1fs)', $dt));
    ok($t->wait_log($mark, qr/uploaded script of \Q$alice\E: exited abnormally/),
         '... logged');

    # ---- SipScriptTimeout 4: a hanging script (and its background child) is ended
    store_script($t, $alice, "#!/bin/sh\n/bin/sleep 61.4747 &\n/bin/sleep 61.4747\n");
    $mark = $t->log_mark;
    ($r, $dt) = call($t, 'alice');
    is($r && $r->code, 500, 'a hanging script: 500');
    cmp_ok($dt, '>', 3.5, sprintf('... after SipScriptTimeout (%.1fs)', $dt));
    ok($t->wait_log($mark, qr/uploaded script of .*timed out/), '... logged as timed out');
    ok(wait_until(3, sub { !$t->procs_matching('61.4747') }, 0.1),
       '... and neither it nor its background child is left');

    # ---- the interpreter allowlist again at run time
    store_script($t, $alice, "#!/usr/bin/python3\nprint('SIP/2.0 200 OK\\n')\n",
                 content_type => 'text/x-python');
    $mark = $t->log_mark;
    ($r) = call($t, 'alice');
    is($r && $r->code, 500, 'an interpreter not in SipUploadInterpreters: 500');
    like($t->log_since($mark), qr{uploaded SIP-CGI script of \Q$alice\E cannot run: interpreter /usr/bin/python3 is not allowed},
         '... logged');
    store_script($t, $alice, "no #! line\n");
    ($r) = call($t, 'alice');
    is($r && $r->code, 500, 'a script without #! line: 500');

    # ---- removal restores SipDirectory's script
    remove_script($t, $alice);
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Who'), 'directory', 'script removed: SipDirectory\'s script again');

    # ---- proxying and response runs: the server does the network work for
    # the script, and every run of one transaction uses the script stored
    # when its request arrived (RP-34: a REGISTER that uploads a new script
    # is handled by the old one)
    {
        my $uas = $t->peer(name => 'uas');
        my $ver = sub {
            my ($v) = @_;
            return "#!/bin/sh\nif [ -n \"\$RESPONSE_STATUS\" ]; then\n"
                 . "  printf 'SIP/2.0 480 Not Now\\nX-Version: $v\\nX-Seen: %s\\n\\n' \"\$RESPONSE_STATUS\"\n"
                 . "else\n  printf 'CGI-PROXY-REQUEST %s SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n' '"
                 . $uas->uri('bob') . "'\nfi\n";
        };
        store_script($t, $alice, $ver->('A'));
        my $uac = $t->peer(name => 'uac');
        my $inv = $uac->invite(uri => "sip:alice\@$HOST:$port");
        my $fwd = $uas->expect(method => 'INVITE', call_id => $uac->call_id($inv));
        ok($fwd, 'an uploaded script proxies the call (CGI-PROXY-REQUEST)');
        store_script($t, $alice, $ver->('B'));     # replaced while the call rings
        $uas->reply($fwd, 486) if $fwd;
        my $fin = $uac->final_for($inv);
        is($fin && $fin->code, 480, '... its response run answers the caller');
        is($fin && $fin->header('X-Seen'), '486', '... having seen the callee\'s 486');
        is($fin && $fin->header('X-Version'), 'A', '... and it is the script stored when the call arrived');
        $uac->ack($inv, $fin) if $fin;
        $inv = $uac->invite(uri => "sip:alice\@$HOST:$port");
        $fwd = $uas->expect(method => 'INVITE', call_id => $uac->call_id($inv));
        $uas->reply($fwd, 486) if $fwd;
        $fin = $uac->final_for($inv);
        is($fin && $fin->header('X-Version'), 'B', 'the next call runs the new script');
        $uac->ack($inv, $fin) if $fin;
    }

    # ---- a CANCEL while the uploaded script works
    store_script($t, $alice, "#!/bin/sh\n/bin/sleep 62.4848\n");
    {
        my $s = $t->udp_socket;
        my $inv = $t->sip_request(method => 'INVITE', sock => $s, uri => "sip:alice\@$HOST:$port");
        $t->udp_send($inv, sock => $s);
        sleep 0.5;
        (my $cancel = $inv) =~ s/^INVITE /CANCEL /;
        $cancel =~ s/CSeq: 1 INVITE/CSeq: 1 CANCEL/;
        $cancel =~ s/\r\n\r\n.*\z/\r\n\r\n/s;
        $t->udp_send($cancel, sock => $s);
        my @codes;
        my $end = time + 5;
        while (time < $end && !(grep { $_ == 487 } @codes)) {
            my $d = $t->udp_recv($s, 0.5) // next;
            push @codes, parse_msg($d)->code;
        }
        ok((grep { $_ == 487 } @codes), 'CANCEL of a call to an uploaded script: 487');
        ok(wait_until(3, sub { !$t->procs_matching('62.4848') }, 0.1), '... and the script is ended');
    }

    is($t->engine_pid, $engine, 'the engine never restarted');
    $t->stop;
}

# --------------------------------------------------------------- sandbox Off
{
    my $t = SipTest->new(
        start => 0,
        scripts => \%dir_scripts,
        server_conf => server_conf(sandbox => 'Off'),
        vhost_conf => "SipScriptUpload On\nSipScriptTimeout 4",
    );
    install_helper($t, 'sip-suexec', 04750);
    $t->start;
    like($t->error_log, qr/run as \Q$UPLOAD_USER\E through .* WITHOUT a sandbox/,
         'SipUploadSandbox Off: logged at start-up');
    my $alice = "sip:alice\@$HOST";
    my $store = $t->dir . '/store/' . sha1_hex($alice) . '/sip-cgi';
    store_script($t, $alice, $id_script . "");
    my ($r) = call($t, 'alice');
    is($r && $r->header('X-Uid'), $up_uid, 'sandbox Off: still runs as SipUploadUser');
    like($r && $r->header('X-Cwd'), qr{/work/\Q${\ sha1_hex($alice)}\E$}, '... in its working directory');
    store_script($t, $alice, "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n'\n"
        . "for f in '$store' /etc/shadow '" . $t->dir . "/run/sip-location.journal'; do\n"
        . "  if cat \"\$f\" >/dev/null 2>&1; then printf 'X-Read: %s\\n' \"\$f\"; fi\ndone\n"
        . "printf 'X-Done: yes\\n\\n'\n");
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Done'), 'yes', '... the snooping script ran');
    is($r && $r->header('X-Read'), undef, '... and could read neither the store, /etc/shadow nor the journal');
    # no pid namespace here: the helper kills the script's process group
    store_script($t, $alice, "#!/bin/sh\n/bin/sleep 63.4949 &\n/bin/sleep 63.4949\n");
    my $dt;
    ($r, $dt) = call($t, 'alice');
    is($r && $r->code, 500, sprintf('sandbox Off: a hanging script gets 500 after SipScriptTimeout (%.1fs)', $dt));
    ok(wait_until(3, sub { !$t->procs_matching('63.4949') }, 0.1),
       '... and neither it nor its background child is left');
    # the engine dies while a script runs: the helper's parent-death signal
    my $engine = $t->engine_pid;
    my $s = $t->udp_socket;
    $t->udp_send($t->sip_request(method => 'INVITE', sock => $s, uri => "sip:alice\@$HOST:" . $t->sip_port),
                 sock => $s);
    ok(wait_until(3, sub { scalar $t->procs_matching('63.4949') }, 0.05), 'a hanging script runs');
    kill 'KILL', $engine;
    ok(wait_until(3, sub { !$t->procs_matching('63.4949') }, 0.1),
       'the engine is killed: the helper ends the script and its child');
    ok(wait_until(10, sub { my $e = $t->engine_pid; $e && $e != $engine }, 0.2), '... and a new engine runs');
    $t->stop;
}

# ------------------------------------------------------- not runnable: 500
{
    my $t = SipTest->new(
        start => 0,
        scripts => \%dir_scripts,
        server_conf => server_conf(suexec => '@DIR@/bin/not-setuid'),
        vhost_conf => "SipScriptUpload On",
    );
    install_helper($t, 'not-setuid', 0755);
    $t->start;
    like($t->error_log, qr/uploaded SIP-CGI scripts cannot run: SipUploadSuexec \S+not-setuid must be .*setuid/,
         'a helper without setuid: start-up says uploaded scripts cannot run');
    my $alice = "sip:alice\@$HOST";
    store_script($t, $alice, $id_script);
    my $mark = $t->log_mark;
    my ($r) = call($t, 'alice');
    is($r && $r->code, 500, 'her uploaded script cannot run: 500 (not SipDirectory\'s script)');
    ok($t->wait_log($mark, qr/uploaded SIP-CGI script of \Q$alice\E cannot run: uploaded scripts cannot run on this server/),
         '... logged');
    remove_script($t, $alice);
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Who'), 'directory', 'without an upload she gets SipDirectory\'s script');
    $t->stop;
}

# SipUploadUser www-data (httpd's own user) is refused at start-up
{
    my $t = SipTest->new(
        start => 0,
        scripts => \%dir_scripts,
        server_conf => server_conf() =~ s/SipUploadUser \S+/SipUploadUser www-data/r,
        vhost_conf => "SipScriptUpload On",
    );
    install_helper($t, 'sip-suexec', 04750);
    $t->start;
    like($t->error_log, qr/SipUploadUser www-data must be neither root nor httpd's User/,
         'SipUploadUser www-data: refused at start-up');
    store_script($t, "sip:alice\@$HOST", $id_script);
    my ($r) = call($t, 'alice');
    is($r && $r->code, 500, '... and uploaded scripts get 500');
    $t->stop;
}

# ------------------------------------- the database store (async fetch)
{
    my $MODDIR = '/usr/lib/apache2/modules';
    ok(-e "$MODDIR/mod_dbd.so" && -x '/usr/bin/sqlite3', 'mod_dbd and sqlite3 are there (make test-deps)');
    my $t = SipTest->new(
        start => 0,
        scripts => \%dir_scripts,
        server_conf => server_conf() . "\nLoadModule dbd_module $MODDIR/mod_dbd.so\n"
                       . "DBDriver sqlite3\nDBDParams \"\@DIR\@/db/location.db\"\nSipLocation dbd",
        vhost_conf => "SipScriptUpload On",
    );
    mkdir $t->dir . '/db', 0777;
    chmod 0777, $t->dir . '/db';
    install_helper($t, 'sip-suexec', 04750);
    $t->start;
    my $db = $t->dir . '/db/location.db';
    # the first lookup makes the tables (the database thread's first job)
    my ($r) = call($t, 'alice');
    is($r && $r->header('X-Who'), 'directory', 'dbd store, no upload: SipDirectory\'s script');
    my $alice = "sip:alice\@$HOST";
    my $hex = unpack('H*', $id_script);
    ok(wait_until(5, sub {
        system('sqlite3', $db, "INSERT INTO sip_scripts (aor, type, content_type, mtime, body_hex) "
               . "VALUES ('$alice', 'sip-cgi', 'application/x-sh', " . time . ", '$hex');") == 0 }, 0.2),
       'a sip-cgi row for alice in sip_scripts');
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Who'), 'uploaded', 'dbd store: her uploaded script answers (fetched by the database thread)');
    is($r && $r->header('X-Uid'), $up_uid, '... as SipUploadUser');
    system('sqlite3', $db, "DELETE FROM sip_scripts WHERE aor = '$alice';");
    ($r) = call($t, 'alice');
    is($r && $r->header('X-Who'), 'directory', 'row deleted: SipDirectory\'s script again');
    $t->stop;
}

done_testing;
