package SipTest;
# Black-box test harness for mod_sip.
#
# Starts a private Apache httpd (mpm_event + mod_sip) on free loopback ports
# inside a temporary directory, and offers small helpers to talk SIP to it
# over UDP and TCP.  See t/README.md for an overview.
#
#   my $t = SipTest->new(scripts => { 'alice@127.0.0.1' => "#!/bin/sh\n..." },
#                        vhost_conf => 'SipScriptTimeout 2');
#   my @r = $t->udp_req($t->sip_request(method => 'OPTIONS'));
#   is($r[-1]->code, 200);
#   $t->stop;             # asserts clean shutdown (3 tests)
#   done_testing;
#
# Script texts, vhost_conf and server_conf may use the placeholders
#   @DIR@      temp root           @SCRIPTS@  SipDirectory
#   @VAR@      a world-writable dir for marker / counter files
#   @SIPPORT@  the SIP port        @HTTPPORT@ the HTTP port
#
# Environment:
#   MOD_SIP_SO     path of the module (default <repo>/.libs/mod_sip.so)
#   APACHE2        httpd binary (default /usr/sbin/apache2)
#   SIPTEST_KEEP=1 keep the temp dir (its path is printed with diag)
#   SIPTEST_DEBUG=1 print every message sent/received

use strict;
use warnings;
use Test::More;
use File::Temp ();
use File::Path ();
use File::Spec;
use File::Basename ();
use Cwd ();
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use POSIX ();
use Time::HiRes qw(time sleep);
use Scalar::Util ();
use Exporter 'import';

our @EXPORT_OK = qw(parse_msg rand_token free_port procs wait_until accept_on response_to);

my $REPO = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');
our $APACHE2 = $ENV{APACHE2} || '/usr/sbin/apache2';
our $MODDIR  = '/usr/lib/apache2/modules';
our $DEBUG   = $ENV{SIPTEST_DEBUG};

my %LIVE;    # refaddr => weak ref, for END-block cleanup

sub repo { $REPO }

sub module_path {
    my $so = $ENV{MOD_SIP_SO} || "$REPO/.libs/mod_sip.so";
    $so = Cwd::abs_path($so) // $so;
    return $so;
}

# ---------------------------------------------------------------- utilities

sub rand_token {
    my $n = shift || 12;
    my @c = ('a' .. 'z', '0' .. '9');
    return join '', map { $c[ int rand @c ] } 1 .. $n;
}

# Wait until $cb returns true or $timeout seconds pass; returns the last value.
# A response to request $m (SipTest::Msg), as a UA would write it: its Vias
# (and Record-Routes with rr => 1), a To tag (tag =>), a Contact (contact =>).
sub response_to {
    my ($m, $code, $reason, %o) = @_;
    my $to = $m->header('to');
    $to .= ";tag=$o{tag}" if $o{tag} && $to !~ /;tag=/;
    my $s = "SIP/2.0 $code $reason\r\n";
    $s .= "Via: $_\r\n" for $m->headers('via');
    $s .= "Record-Route: $_\r\n" for ($o{rr} ? $m->headers('record-route') : ());
    $s .= "From: " . $m->header('from') . "\r\nTo: $to\r\nCall-ID: " . $m->header('call-id')
        . "\r\nCSeq: " . $m->header('cseq') . "\r\n";
    $s .= "Contact: <$o{contact}>\r\n" if $o{contact};
    return $s . "Content-Length: 0\r\n\r\n";
}

sub wait_until {
    my ($timeout, $cb, $step) = @_;
    $step ||= 0.05;
    my $end = time + $timeout;
    while (1) {
        my $v = $cb->();
        return $v if $v;
        return $v if time >= $end;
        sleep $step;
    }
}

my %USED_PORTS;
# Ports are taken below the kernel's ephemeral range: a port chosen here is
# free when checked but only bound later by httpd or a peer, and meanwhile
# any outgoing connection or unbound UDP socket of a test running in
# parallel (tls-idle.t opens thousands) could be given it.
my ($PORT_LO, $PORT_HI) = (20000, 59999);
if (open(my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range')) {
    my ($lo) = split ' ', (<$fh> // '');
    ($PORT_LO, $PORT_HI) = (10000, $lo - 1) if $lo && $lo > 15000;
}
# `make ci` runs the plain and the ASan suites side by side: each takes its
# own half, so a port one checked free cannot be bound by the other first.
{
    my $mid = int(($PORT_LO + $PORT_HI) / 2);
    if ($ENV{MOD_SIP_PRELOAD}) { $PORT_LO = $mid + 1 } else { $PORT_HI = $mid }
}
# A port that is free on 127.0.0.1 for both TCP and UDP.
sub free_port {
    for (1 .. 500) {
        my $p = $PORT_LO + int(rand($PORT_HI - $PORT_LO + 1));
        next if $USED_PORTS{$p};
        my $tcp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
                                        Proto => 'tcp', Listen => 1) or next;
        my $udp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
                                        Proto => 'udp') or next;
        close $tcp; close $udp;
        $USED_PORTS{$p} = 1;
        return $p;
    }
    die "SipTest: could not find a free loopback port\n";
}

# All processes as hashrefs {pid, ppid, stat, cmd}, read from /proc.
sub procs {
    my @p;
    opendir(my $dh, '/proc') or die "no /proc: $!";
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        open(my $fh, '<', "/proc/$pid/stat") or next;
        my $stat = <$fh>;
        close $fh;
        next unless defined $stat && $stat =~ /^\d+ \((.*)\) (\S) (\d+)/s;
        my ($comm, $state, $ppid) = ($1, $2, $3);
        my $cmd = '';
        if (open(my $ch, '<', "/proc/$pid/cmdline")) {
            local $/;
            $cmd = <$ch> // '';
            close $ch;
            $cmd =~ s/\0+$//;
            $cmd =~ s/\0/ /g;
        }
        $cmd = "[$comm]" if $cmd eq '';
        push @p, { pid => $pid, ppid => $ppid, stat => $state, cmd => $cmd, comm => $comm };
    }
    closedir $dh;
    return @p;
}

sub _ps_dump {
    return join '', map { sprintf "  %s %6d %6d %s\n", $_->{stat}, $_->{ppid}, $_->{pid}, $_->{cmd} }
        sort { $a->{pid} <=> $b->{pid} } @_;
}

# ------------------------------------------------------------- construction

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        owner       => $$,
        running     => 0,
        vhost_conf  => $o{vhost_conf}  // '',
        server_conf => $o{server_conf} // '',
        scripts     => $o{scripts}     // {},
        setup       => $o{setup},
        start_timeout => $o{start_timeout} // 30,   # CI runs two suites side by side
        log_level   => 'info sip:debug',
    }, $class;

    my $so = module_path();
    unless (-f $so) {
        fail("mod_sip module present");
        diag("mod_sip.so not found at '$so': build it with 'make -C $REPO' or set MOD_SIP_SO");
        die "SipTest: module $so not found\n";
    }
    $self->{so} = $so;
    unless (-x $APACHE2) {
        fail("apache2 binary present");
        die "SipTest: $APACHE2 not executable\n";
    }

    # /tmp (not $TMPDIR): the path must be traversable by www-data
    my $dir = File::Temp::tempdir('mod_sip_test_XXXXXX', DIR => $ENV{SIPTEST_TMPDIR} // '/tmp', CLEANUP => 0);
    $dir = Cwd::abs_path($dir);
    $self->{dir}     = $dir;
    $self->{scripts_dir} = "$dir/scripts";
    $self->{var}     = "$dir/var";
    $self->{logs}    = "$dir/logs";
    $self->{run}     = "$dir/run";
    $self->{confdir} = "$dir/conf";
    $self->{conf}    = "$dir/conf/httpd.conf";
    $self->{pidfile} = "$dir/run/httpd.pid";
    $self->{errlog}  = "$dir/logs/error.log";
    $self->{engine_pidfile} = "$dir/run/sip-engine.pid";
    $self->{engines_pidfile} = "$dir/run/sip-engines.pid";
    $self->{is_root} = ($> == 0);

    chmod 0755, $dir;
    for my $d (@{$self}{qw(scripts_dir var logs run confdir)}) {
        mkdir $d or die "mkdir $d: $!";
        chmod 0755, $d;
    }
    chmod 01777, $self->{var};
    if ($self->{is_root}) {
        my (undef, undef, $uid, $gid) = getpwnam('www-data');
        die "SipTest: user www-data missing\n" unless defined $uid;
        @{$self}{qw(www_uid www_gid)} = ($uid, $gid);
        chown $uid, $gid, $self->{logs}, $self->{run};
    }

    $self->{sip_port}  = $o{sip_port}  // free_port();
    $self->{http_port} = $o{http_port} // free_port();

    $self->write_scripts($self->{scripts});
    $self->{setup}->($self) if $self->{setup};

    $self->{udp} = $self->udp_socket;

    $LIVE{ Scalar::Util::refaddr($self) } = $self;
    Scalar::Util::weaken($LIVE{ Scalar::Util::refaddr($self) });

    diag("SipTest dir: $dir") if $ENV{SIPTEST_KEEP} || $DEBUG;
    $self->start unless exists $o{start} && !$o{start};
    return $self;
}

sub dir         { $_[0]{dir} }
sub scripts_dir { $_[0]{scripts_dir} }
sub var         { $_[0]{var} }
sub sip_port    { $_[0]{sip_port} }
sub http_port   { $_[0]{http_port} }
sub conf_file   { $_[0]{conf} }

sub subst {
    my ($self, $text) = @_;
    return $text unless defined $text;
    $text =~ s/\@DIR\@/$self->{dir}/g;
    $text =~ s/\@SCRIPTS\@/$self->{scripts_dir}/g;
    $text =~ s/\@VAR\@/$self->{var}/g;
    $text =~ s/\@SIPPORT\@/$self->{sip_port}/g;
    $text =~ s/\@HTTPPORT\@/$self->{http_port}/g;
    return $text;
}

# scripts: { name => "text" } or { name => { text => ..., mode => 0644 } }
#          or { name => { symlink => target } } (target is substituted too)
# Names may contain '/' to create sub directories of SipDirectory.
sub write_scripts {
    my ($self, $scripts) = @_;
    for my $name (sort keys %$scripts) {
        my $spec = $scripts->{$name};
        $spec = { text => $spec } unless ref $spec;
        $self->write_script($name, %$spec);
    }
}

sub write_script {
    my ($self, $name, %spec) = @_;
    my $path = $spec{abs} ? $name : "$self->{scripts_dir}/$name";
    my $d = File::Basename::dirname($path);
    unless (-d $d) {
        File::Path::make_path($d, { mode => 0755 });
    }
    unlink $path if -e $path || -l $path;
    if (defined $spec{symlink}) {
        symlink($self->subst($spec{symlink}), $path) or die "symlink $path: $!";
        return $path;
    }
    open(my $fh, '>', $path) or die "write $path: $!";
    binmode $fh;
    print $fh $self->subst($spec{text} // '');
    close $fh or die "close $path: $!";
    chmod(($spec{mode} // 0755), $path) or die "chmod $path: $!";
    return $path;
}

sub remove_script {
    my ($self, $name) = @_;
    unlink "$self->{scripts_dir}/$name" or die "unlink $name: $!";
}

sub _conf_text {
    my ($self) = @_;
    my $dir = $self->{dir};
    my $user = $self->{is_root} ? "User www-data\nGroup www-data\n" : '';
    my $vhost = $self->subst($self->{vhost_conf});
    my $server = $self->subst($self->{server_conf});
    $vhost =~ s/^/    /mg;
    # SIP_TEST_ENGINES=2 runs a file with two engines (make test-engines2);
    # a test's own SipEngines in server_conf comes later and wins.
    my $engines = $ENV{SIP_TEST_ENGINES} || 1;
    return <<"EOC";
ServerRoot $dir
PidFile $self->{pidfile}
ErrorLog $self->{errlog}
DefaultRuntimeDir $self->{run}
Mutex file:$self->{run} default
ScoreBoardFile $self->{run}/scoreboard
ServerName 127.0.0.1
${user}LoadModule mpm_event_module $MODDIR/mod_mpm_event.so
LoadModule authz_core_module $MODDIR/mod_authz_core.so
LoadModule sip_module $self->{so}
LogLevel $self->{log_level}
SipEngines $engines
StartServers 2
Listen 127.0.0.1:$self->{http_port}
Listen 127.0.0.1:$self->{sip_port}
<VirtualHost 127.0.0.1:$self->{sip_port}>
    ServerName 127.0.0.1
    ProtocolSip On
    SipDirectory $self->{scripts_dir}
$vhost
</VirtualHost>
$server
EOC
}

sub write_conf {
    my ($self) = @_;
    open(my $fh, '>', $self->{conf}) or die "write $self->{conf}: $!";
    print $fh $self->_conf_text;
    close $fh;
    chmod 0644, $self->{conf};
}

# exec apache2 -f CONF ARGS (in a forked child).  For make test-asan the
# sanitizer runtimes go first into the uninstrumented httpd that loads the
# instrumented module.
sub exec_apache {
    my ($conf, @args) = @_;
    if ($ENV{MOD_SIP_PRELOAD}) {
        $ENV{LD_PRELOAD} = $ENV{MOD_SIP_PRELOAD};
        $ENV{ASAN_OPTIONS} //= 'detect_leaks=0:abort_on_error=0';
        $ENV{UBSAN_OPTIONS} //= 'print_stacktrace=1';
    }
    { no warnings "exec"; exec $APACHE2, "-f", $conf, @args; }
    POSIX::_exit(127);
}

# apache2 with our config and @args in a child whose output goes to file
# $out; its pid (not waited for).
sub spawn_apache {
    my ($self, $out, @args) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $out);
        open(STDERR, '>&', \*STDOUT);
        exec_apache($self->{conf}, @args);
        POSIX::_exit(127);
    }
    return $pid;
}

sub _run_apache {
    my ($self, @args) = @_;
    my $out = "$self->{dir}/apache2.out";
    my $pid = $self->spawn_apache($out, @args);
    waitpid($pid, 0);
    my $rc = $?;
    my $text = '';
    if (open(my $fh, '<', $out)) { local $/; $text = <$fh> // ''; }
    return ($rc, $text);
}

sub apachectl {
    my ($self, $cmd) = @_;
    my ($rc, $out) = $self->_run_apache('-k', $cmd);
    diag("apache2 -k $cmd: rc=$rc $out") if $rc;
    return $rc == 0;
}

sub start {
    my ($self) = @_;
    $self->write_conf;
    my ($rc, $out) = $self->_run_apache('-t');
    if ($rc != 0 && $out =~ /LogLevel/i) {
        $self->{log_level} = 'debug';
        $self->write_conf;
        ($rc, $out) = $self->_run_apache('-t');
    }
    if ($rc != 0) {
        fail("httpd configuration accepted");
        diag("apache2 -t failed:\n$out\n--- config:\n" . $self->_conf_text);
        die "SipTest: httpd config test failed\n";
    }
    ($rc, $out) = $self->_run_apache('-k', 'start');
    if ($rc != 0) {
        fail("httpd started");
        diag("apache2 -k start failed (rc=$rc):\n$out\n" . $self->_log_tail);
        die "SipTest: httpd did not start\n";
    }
    $self->{running} = 1;

    my $ok = wait_until($self->{start_timeout}, sub {
        return 0 unless $self->httpd_pid;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{sip_port},
                                      Proto => 'tcp', Timeout => 1) or return 0;
        close $s;
        return $self->_udp_ping(0.3);
    }, 0.1);
    unless ($ok) {
        fail("httpd with mod_sip ready within $self->{start_timeout}s");
        diag("httpd/mod_sip not answering (TCP connect + UDP OPTIONS) on 127.0.0.1:$self->{sip_port}");
        diag($self->_log_tail);
        $self->_hard_kill;
        die "SipTest: server not ready\n";
    }
    $self->{known_pids} = { map { $_ => 1 } $self->server_pids };
    return 1;
}

sub _udp_ping {
    my ($self, $timeout) = @_;
    my $s = $self->udp_socket;
    my $req = $self->sip_request(method => 'OPTIONS', sock => $s,
                                 uri => "sip:ping\@127.0.0.1:$self->{sip_port}");
    $self->udp_send($req, sock => $s);
    my $r = $self->udp_recv($s, $timeout);
    return defined $r && $r =~ m{^SIP/2\.0 \d{3}};
}

sub _log_tail {
    my ($self) = @_;
    my $t = $self->error_log;
    my @l = split /\n/, $t;
    @l = @l[-60 .. -1] if @l > 60;
    return "--- error.log tail ($self->{errlog}):\n" . join("\n", @l) . "\n";
}

sub error_log {
    my ($self) = @_;
    open(my $fh, '<', $self->{errlog}) or return '';
    local $/;
    my $t = <$fh>;
    return $t // '';
}

sub log_mark { my $s = -s $_[0]{errlog}; return $s // 0 }

sub log_since {
    my ($self, $mark) = @_;
    my $t = $self->error_log;
    return length($t) > $mark ? substr($t, $mark) : '';
}

# wait until the log since $mark matches $re; returns the matching text or ''
sub wait_log {
    my ($self, $mark, $re, $timeout) = @_;
    my $found = '';
    wait_until($timeout // 3, sub {
        my $t = $self->log_since($mark);
        my @m = grep { /$re/ } split /\n/, $t;
        $found = join("\n", @m);
        return @m ? 1 : 0;
    }, 0.1);
    return $found;
}

sub dump_log_on_failure {
    my ($self) = @_;
    my $ctx = Test::More->builder;
    diag($self->_log_tail) unless $ctx->is_passing;
}

sub _read_pidfile {
    my ($file) = @_;
    open(my $fh, '<', $file) or return undef;
    my $l = <$fh>;
    close $fh;
    return undef unless defined $l && $l =~ /(\d+)/;
    return $1;
}

sub httpd_pid {
    my ($self) = @_;
    my $p = _read_pidfile($self->{pidfile});
    return undef unless $p && kill(0, $p);
    return $p;
}

# pid of the SIP engine (from <DefaultRuntimeDir>/sip-engine.pid) if alive
sub engine_pid {
    my ($self) = @_;
    my $p = _read_pidfile($self->{engine_pidfile});
    return undef unless $p && kill(0, $p);
    my ($pr) = grep { $_->{pid} == $p } procs();
    return undef if !$pr || $pr->{stat} eq 'Z';
    return $p;
}

# Every engine's pid, in engine order (sip-engines.pid); a dead or not yet
# restarted engine's entry is undef.
sub engine_pids {
    my ($self) = @_;
    open(my $fh, '<', $self->{engines_pidfile}) or return ();
    my @pids = map { /^(\d+)/ ? $1 : 0 } <$fh>;
    close $fh;
    my %alive = map { $_->{pid} => 1 } grep { $_->{stat} ne 'Z' } procs();
    return map { $_ && $alive{$_} ? $_ : undef } @pids;
}

# kill -9 engine $i and wait (up to $timeout s, default 10) until the parent
# runs another in its place: (the killed pid, the new pid or undef).
sub kill_engine {
    my ($self, $i, $timeout) = @_;
    my $victim = ($self->engine_pids)[$i] or return;
    kill('KILL', $victim) or return ($victim);
    my $new;
    wait_until($timeout // 10, sub { $new = ($self->engine_pids)[$i];
                                     $new && $new != $victim && kill(0, $new) }, 0.1);
    return ($victim, $new && $new != $victim ? $new : undef);
}

sub engine_pidfile { $_[0]{engine_pidfile} }

# httpd parent plus all its descendants
sub server_pids {
    my ($self, @procs) = @_;
    my $root = $self->httpd_pid or return ();
    @procs = procs() unless @procs;
    my %kids;
    push @{ $kids{ $_->{ppid} } }, $_->{pid} for @procs;
    my @out;
    my @todo = ($root);
    while (@todo) {
        my $p = shift @todo;
        push @out, $p;
        push @todo, @{ $kids{$p} || [] };
    }
    return @out;
}

# Processes (not zombies) whose command line mentions the temp dir.
sub leftover_procs {
    my ($self) = @_;
    my $d = $self->{dir};
    return grep { $_->{pid} != $$ && $_->{stat} ne 'Z' && index($_->{cmd}, $d) >= 0 } procs();
}

# Zombies whose parent is one of our httpd processes (parent, children, engine).
sub zombies {
    my ($self) = @_;
    my @p = procs();
    my %ours = map { $_ => 1 } ($self->server_pids(@p), keys %{ $self->{known_pids} || {} });
    return grep { $_->{stat} eq 'Z' && $ours{ $_->{ppid} } } @p;
}

# Processes whose command line contains $needle (excluding ourselves).
sub procs_matching {
    my ($self, $needle) = @_;
    return grep { $_->{pid} != $$ && $_->{stat} ne 'Z' && index($_->{cmd}, $needle) >= 0 } procs();
}

sub assert_no_zombies {
    my ($self, $name) = @_;
    my @z;
    wait_until(2, sub { @z = $self->zombies; !@z }, 0.1);
    ok(!@z, $name // 'no zombie children of httpd/engine') or diag("zombies:\n" . _ps_dump(@z));
}

sub stop {
    my ($self, %o) = @_;
    return unless $self->{running};
    my $quiet = $o{quiet};
    my @ours = $self->server_pids;
    $self->{known_pids}{$_} = 1 for @ours;
    my @z;
    unless ($quiet) {
        wait_until(2, sub { @z = $self->zombies; !@z }, 0.1);
    }
    my $parent = $self->httpd_pid;
    $self->_run_apache('-k', 'stop');
    my $gone = wait_until(10, sub { !-e $self->{pidfile} && !($parent && kill(0, $parent) && !_is_zombie($parent)) }, 0.1);
    $self->{running} = 0;
    my @left;
    wait_until(3, sub { @left = $self->leftover_procs; !@left }, 0.1);
    unless ($quiet) {
        ok($gone, 'httpd stopped (PidFile removed) within 10s') or diag($self->_log_tail);
        ok(!@left, 'no process left whose command line mentions the test dir')
            or diag("leftover processes:\n" . _ps_dump(@left));
        ok(!@z, 'no zombie children of httpd/engine before stop')
            or diag("zombies:\n" . _ps_dump(@z));
        my @crash = $self->crash_lines;
        ok(!@crash, 'no httpd child or SIP engine crashed (error log)')
            or diag("crash lines:\n" . join("\n", @crash)), $self->_save_crash_context;
    }
    $self->_hard_kill if @left || !$gone;
    return $gone && !@left && !@z;
}

our $CRASH_RE = qr/exit signal (?:Segmentation|Aborted|Bus error|Illegal|Floating|Trace|Bad system)|dumped core|possible coredump|AddressSanitizer|LeakSanitizer|runtime error:/i;

# A crash report with the error-log lines around it, appended to
# t/crash-context.log: `make ci` prints that file last, so a report seen
# once in CI can be read from the end of its output.
sub _save_crash_context {
    my ($self) = @_;
    my @l = split /\n/, $self->error_log;
    my %keep;
    for my $i (grep { $l[$_] =~ $CRASH_RE } 0 .. $#l) {
        $keep{$_} = 1 for grep { $_ >= 0 && $_ <= $#l } $i - 12 .. $i + 25;
    }
    open(my $fh, '>>', 't/crash-context.log') or return;
    print $fh "== $0: $self->{errlog}\n", map({ "$l[$_]\n" } sort { $a <=> $b } keys %keep);
    close $fh;
}

# Error-log lines reporting a crashed child (segfault, abort, ...).
sub crash_lines {
    my ($self) = @_;
    return grep { $_ =~ $CRASH_RE } split /\n/, $self->error_log;
}

sub _is_zombie {
    my $pid = shift;
    open(my $fh, '<', "/proc/$pid/stat") or return 1;
    my $s = <$fh>;
    return ($s // '') =~ /^\d+ \(.*\) Z /s;
}

sub _hard_kill {
    my ($self) = @_;
    my $p = _read_pidfile($self->{pidfile});
    kill 'TERM', $p if $p;
    sleep 0.5;
    for my $pr ($self->leftover_procs) {
        kill 'KILL', $pr->{pid};
    }
    $self->{running} = 0;
}

sub cleanup_dir {
    my ($self) = @_;
    return if $ENV{SIPTEST_KEEP};
    return unless $self->{dir} && -d $self->{dir};
    File::Path::remove_tree($self->{dir}, { safe => 0 });
}

sub DESTROY {
    my ($self) = @_;
    return unless $self->{owner} && $self->{owner} == $$;
    local ($?, $@, $!);
    eval { $self->sipp_kill_all };
    if ($self->{running}) {
        eval { $self->stop(quiet => 1) };
    }
    $self->cleanup_dir;
    delete $LIVE{ Scalar::Util::refaddr($self) };
}

END {
    for my $k (keys %LIVE) {
        my $t = $LIVE{$k} or next;
        next unless $t->{owner} == $$;
        local $?;
        eval { $t->sipp_kill_all; $t->stop(quiet => 1) if $t->{running}; $t->cleanup_dir };
    }
}

# ------------------------------------------------------------------ messages

my %COMPACT = (v => 'via', f => 'from', t => 'to', i => 'call-id', l => 'content-length',
               c => 'content-type', m => 'contact', k => 'supported', e => 'content-encoding',
               s => 'subject', o => 'event', u => 'allow-events', r => 'refer-to',
               b => 'referred-by', x => 'session-expires', a => 'accept-contact',
               j => 'reject-contact', d => 'request-disposition', y => 'identity', n => 'identity-info');

sub canon_header {
    my $n = lc shift;
    return $COMPACT{$n} // $n;
}

# Build a SIP request.  Arguments:
#   method, uri, transport (UDP|TCP), sock (to take the Via port from),
#   via_port, branch, call_id, from_tag, cseq (number), cseq_method, to,
#   headers => [ name => value, ... ] (appended), body, content_type,
#   content_length (override), omit => [names], replace => { name => value },
#   compact => 1 (use compact header names), max_forwards, via (whole value),
#   lf => 1 (LF line ends instead of CRLF), version (default SIP/2.0)
sub sip_request {
    my ($self, %a) = @_;
    my $method = $a{method} // 'OPTIONS';
    my $port = ref $self ? $self->{sip_port} : 5060;
    my $uri = $a{uri} // "sip:alice\@127.0.0.1:$port";
    my $tr = uc($a{transport} // 'UDP');
    my $via_port = $a{via_port};
    unless (defined $via_port) {
        my $s = $a{sock} // ($tr eq 'UDP' && ref $self ? $self->{udp} : undef);
        $via_port = $s ? $s->sockport : 5060;
    }
    my $branch  = $a{branch}   // 'z9hG4bK' . rand_token(16);
    my $callid  = $a{call_id}  // rand_token(16) . '@127.0.0.1';
    my $ftag    = $a{from_tag} // rand_token(8);
    my $cseq    = $a{cseq}     // 1;
    my $cmeth   = $a{cseq_method} // $method;
    my $body    = $a{body}     // '';
    (my $to_uri = $uri) =~ s/;.*$//;
    my @h = (
        'Via'          => $a{via} // "SIP/2.0/$tr 127.0.0.1:$via_port;branch=$branch;rport",
        'Max-Forwards' => $a{max_forwards} // 70,
        'From'         => $a{from} // "<sip:tester\@127.0.0.1>;tag=$ftag",
        'To'           => $a{to} // "<$to_uri>",
        'Call-ID'      => $callid,
        'CSeq'         => "$cseq $cmeth",
    );
    push @h, 'Content-Type' => $a{content_type} if defined $a{content_type};
    my @extra = ref $a{headers} eq 'HASH' ? %{ $a{headers} } : @{ $a{headers} || [] };
    push @h, @extra;
    push @h, 'Content-Length' => $a{content_length} // length($body);
    my %omit = map { lc($_) => 1 } @{ $a{omit} || [] };
    my %repl = map { lc($_) => $a{replace}{$_} } keys %{ $a{replace} || {} };
    my %short = reverse %COMPACT;
    my $eol = $a{lf} ? "\n" : "\r\n";
    my $msg = "$method $uri " . ($a{version} // 'SIP/2.0') . $eol;
    while (@h) {
        my ($n, $v) = splice @h, 0, 2;
        next if $omit{ lc $n };
        $v = $repl{ lc $n } if exists $repl{ lc $n };
        next unless defined $v;
        my $name = $n;
        $name = $short{ lc $n } if $a{compact} && $short{ lc $n };
        $msg .= "$name: $v$eol";
    }
    return $msg . $eol . $body;
}

sub parse_msg { SipTest::Msg->parse(@_) }

# ----------------------------------------------------------------------- UDP

sub udp_socket {
    my ($self, %o) = @_;
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $o{port} // 0,
                                  Proto => 'udp') or die "udp socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1 << 20);
    return $s;
}

# A new UDP socket whose datagrams reach engine 'n' (with SipEngines the
# kernel spreads the sockets of clients over the engines' SO_REUSEPORT
# group): the engine that answers a MESSAGE to a user without a script
# (404) names itself in its To tag ("mS" and its mark, sip_transaction.c).
# undef if none is found.
sub udp_socket_to_engine {
    my ($self, $n) = @_;
    my $mark = substr('0123456789abcdefghijklmnopqrstuv', $n, 1);
    for (1 .. 64) {
        my $s = $self->udp_socket;
        my $req = $self->sip_request(method => 'MESSAGE', sock => $s,
                                     uri => "sip:nobody-$$\@127.0.0.1:$self->{sip_port}");
        my @r = $self->udp_req($req, 3, sock => $s);
        return $s if @r && ($r[-1]->header('to') // '') =~ /;tag=mS\Q$mark\E/;
    }
    return undef;
}

sub udp_port { my ($self, $s) = @_; ($s // $self->{udp})->sockport }

sub udp_send {
    my ($self, $raw, %o) = @_;
    my $s = $o{sock} // $self->{udp};
    my $port = $o{port} // $self->{sip_port};
    my $dst = Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1'));
    print STDERR "--> UDP ", length($raw), " bytes\n$raw\n" if $DEBUG;
    defined(send($s, $raw, 0, $dst)) or die "udp send: $!";
}

# One datagram or undef after $timeout seconds.
sub udp_recv {
    my ($self, $s, $timeout) = @_;
    $s //= $self->{udp};
    my $sel = IO::Select->new($s);
    return undef unless $sel->can_read($timeout // 2);
    my $buf;
    defined(recv($s, $buf, 70000, 0)) or return undef;
    print STDERR "<-- UDP ", length($buf), " bytes\n$buf\n" if $DEBUG;
    return $buf;
}

# The next request arriving on UDP socket $s (of method $method, if
# given) as raw text, skipping responses and retransmissions of a request
# already taken from $s (same method, Call-ID and CSeq); undef on timeout.
sub udp_new_request {
    my ($self, $s, $timeout, $method) = @_;
    my $seen = ${*$s}{siptest_seen} //= {};
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $d = $self->udp_recv($s, $left) // return undef;
        my $m = parse_msg($d);
        next if $m->is_response;
        next if $method && $m->method ne $method;
        next if $seen->{ join '|', $m->method, $m->header('call-id') // '', $m->header('cseq') // '' }++;
        return $d;
    }
    return undef;
}

sub udp_drain {
    my ($self, $s) = @_;
    $s //= $self->{udp};
    my @d;
    while (defined(my $d = $self->udp_recv($s, 0))) { push @d, $d }
    return @d;
}

# The first final response (SipTest::Msg) arriving on UDP socket $s within
# $timeout seconds (default 3), skipping requests and 1xx; undef if none.
sub udp_final {
    my ($self, $s, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $d = $self->udp_recv($s, $left) // return undef;
        my $m = parse_msg($d);
        return $m if $m->is_response && $m->code >= 200;
    }
    return undef;
}

# Collect all datagrams on $s during $duration seconds: list of [t, raw]
# (t relative to the call).  With filter => sub { raw } only matching ones.
sub udp_collect {
    my ($self, $s, $duration, %o) = @_;
    $s //= $self->{udp};
    my $t0 = time;
    my @got;
    while (1) {
        my $left = $t0 + $duration - time;
        last if $left <= 0;
        my $d = $self->udp_recv($s, $left);
        next unless defined $d;
        next if $o{filter} && !$o{filter}->($d);
        push @got, [ time - $t0, $d ];
    }
    return @got;
}

sub _callid_of {
    my $raw = shift;
    return $raw =~ /^(?:call-id|i)[ \t]*:[ \t]*(\S+)/mi ? $1 : undef;
}

# Send $raw and return the raw responses received until a final response or
# $timeout.  Responses with a different Call-ID (stray retransmissions of
# earlier tests) are skipped.  Options: sock, port, resend => [t1,...]
sub udp_request {
    my ($self, $raw, $timeout, %o) = @_;
    $timeout //= 3;
    my $s = $o{sock} // $self->{udp};
    $self->udp_drain($s) unless $o{no_drain};
    my $cid = _callid_of($raw);
    $self->udp_send($raw, %o, sock => $s);
    my @r;
    my $end = time + $timeout;
    while ((my $left = $end - time) > 0) {
        my $d = $self->udp_recv($s, $left);
        last unless defined $d;
        if (defined $cid) {
            my $rc = _callid_of($d);
            if (defined $rc && $rc ne $cid) {
                diag("ignoring stray datagram for Call-ID $rc") if $DEBUG;
                next;
            }
        }
        push @r, $d;
        last if $d =~ m{^SIP/2\.0 [2-6]\d\d};
    }
    return @r;
}

# Like udp_request but returns parsed SipTest::Msg objects.
sub udp_req {
    my ($self, @a) = @_;
    return map { parse_msg($_) } $self->udp_request(@a);
}

# ----------------------------------------------------------------------- TCP

# Options: port, timeout, local_addr (e.g. 127.0.0.2: another source address).
sub tcp_connect {
    my ($self, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port} // $self->{sip_port},
                                  Proto => 'tcp', Timeout => $o{timeout} // 5,
                                  ($o{local_addr} ? (LocalAddr => $o{local_addr}) : ()))
        or return undef;
    $s->autoflush(1);
    ${*$s}{siptest_buf} = '';
    return $s;
}

# A connection accepted on listening socket $l within $timeout s (default 3),
# ready for read_msg like one of tcp_connect's; undef if none came.
sub accept_on {
    my ($l, $timeout) = @_;
    return undef unless IO::Select->new($l)->can_read($timeout // 3);
    my $c = $l->accept or return undef;
    $c->autoflush(1);
    ${*$c}{siptest_buf} = '';
    return $c;
}

sub send_raw {
    my ($self, $s, $data) = @_;
    print STDERR "--> TCP ", length($data), " bytes\n$data\n" if $DEBUG;
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($s, $data, length($data) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }
    return 1;
}

# Fill the buffer of $s with more data; 0 on timeout, -1 on EOF/error.
sub _tcp_fill {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    # a TLS socket (IO::Socket::SSL) may hold decrypted bytes select() cannot see
    return 0 unless ($s->can('pending') && $s->pending)
        || $sel->can_read($timeout < 0 ? 0 : $timeout);
    my $n = sysread($s, my $buf, 65536);
    if (!$n) { ${*$s}{siptest_eof} = 1; return -1 }
    ${*$s}{siptest_buf} .= $buf;
    return 1;
}

sub tcp_eof { my ($self, $s) = @_; return ${*$s}{siptest_eof} }

# Read exactly $n raw bytes (or what arrived before timeout/EOF).
sub read_raw {
    my ($self, $s, $n, $timeout) = @_;
    my $end = time + ($timeout // 2);
    while (length(${*$s}{siptest_buf}) < $n) {
        my $r = _tcp_fill($s, $end - time);
        last if $r <= 0;
    }
    return substr(${*$s}{siptest_buf}, 0, $n, '');
}

# Read one SIP message framed by Content-Length; undef on timeout or EOF.
# Leading CRLFs (keep-alive pongs) are skipped and counted in ${*$s}{siptest_pongs}.
sub read_response {
    my ($self, $s, $timeout) = @_;
    my $end = time + ($timeout // 3);
    my $b = \${*$s}{siptest_buf};
    while (1) {
        while ($$b =~ s/^\r\n//) { ${*$s}{siptest_pongs}++ }
        if ($$b =~ /\r?\n\r?\n/) {
            my $hlen = $+[0];
            my $head = substr($$b, 0, $hlen);
            my $cl = 0;
            if ($head =~ /^(?:content-length|l)[ \t]*:[ \t]*(\d+)/mi) { $cl = $1 }
            if (length($$b) >= $hlen + $cl) {
                my $raw = substr($$b, 0, $hlen + $cl, '');
                print STDERR "<-- TCP ", length($raw), " bytes\n$raw\n" if $DEBUG;
                return parse_msg($raw);
            }
        }
        my $left = $end - time;
        return undef if $left <= 0;
        my $r = _tcp_fill($s, $left);
        return undef if $r < 0;
    }
}

# Read responses on $s until a final one (or timeout); list of SipTest::Msg.
sub read_until_final {
    my ($self, $s, $timeout) = @_;
    my $end = time + ($timeout // 3);
    my @r;
    while ((my $left = $end - time) > 0) {
        my $m = $self->read_response($s, $left) or last;
        push @r, $m;
        last if $m->is_response && $m->code >= 200;
    }
    return @r;
}

# Connect, send $raw, return responses until final.  Returns (list of msgs).
sub tcp_request {
    my ($self, $raw, $timeout, %o) = @_;
    my $s = $o{sock} // $self->tcp_connect or die "tcp connect: $!";
    $self->send_raw($s, $raw);
    return $self->read_until_final($s, $timeout);
}

# Send one request with the given transport ('udp' or 'tcp'); %a goes to
# sip_request.  Returns parsed responses until the final one.
sub transact {
    my ($self, $transport, %a) = @_;
    my $timeout = delete $a{timeout} // 3;
    if (lc $transport eq 'tcp') {
        my $s = delete $a{sock} // $self->tcp_connect or die "tcp connect: $!";
        my $raw = $self->sip_request(%a, transport => 'TCP', sock => $s);
        return $self->tcp_request($raw, $timeout, sock => $s);
    }
    my $raw = $self->sip_request(%a, transport => 'UDP');
    return $self->udp_req($raw, $timeout, sock => $a{sock});
}

# The server answers a plain OPTIONS with 200 (over 'udp' or 'tcp').
sub options_ok {
    my ($self, $transport, $uri) = @_;
    my @r = eval {
        $self->transact($transport // 'udp', method => 'OPTIONS',
                        uri => $uri // "sip:nobody-$$\@127.0.0.1:$self->{sip_port}",
                        sock => (lc($transport // 'udp') eq 'udp' ? $self->udp_socket : undef))
    };
    return @r && $r[-1]->code == 200;
}

# Build the ACK for a non-2xx final response $resp to INVITE $inv (raw text).
sub ack_for {
    my ($self, $inv_raw, $resp, %o) = @_;
    my $inv = parse_msg($inv_raw);
    my ($num) = $inv->header('cseq') =~ /^(\d+)/;
    my $eol = "\r\n";
    my $via = $o{new_branch}
        ? do { (my $v = $inv->header('via')) =~ s/branch=[^;,\s]+/'branch=z9hG4bK' . rand_token(16)/e; $v }
        : $inv->header('via');
    my $msg = "ACK " . ($o{uri} // $inv->uri) . " SIP/2.0$eol"
        . "Via: $via$eol"
        . "Max-Forwards: 70$eol"
        . "From: " . $inv->header('from') . $eol
        . "To: " . $resp->header('to') . $eol
        . "Call-ID: " . $inv->header('call-id') . $eol
        . "CSeq: $num ACK$eol"
        . "Content-Length: 0$eol$eol";
    return $msg;
}

# Assert that response $resp (SipTest::Msg) correctly mirrors request $req_raw:
# exactly one Via equal to the request's top Via plus received=127.0.0.1 and
# rport=<src_port> (when the request asked for rport), From, Call-ID, CSeq
# identical, To identical plus a tag (unless code 100), Content-Length equal
# to the body length, CRLF line ends.  Runs several tests named "$label: ...".
sub check_mirrored {
    my ($self, $req_raw, $resp, $label, %o) = @_;
    my $req = parse_msg($req_raw);
    unless ($resp && $resp->is_response) {
        fail("$label: got a response");
        return;
    }
    my @via = $resp->header_elems('via');
    is(scalar(@via), 1, "$label: exactly one Via") or diag(join "\n", @via);
    my ($rv) = $req->header_elems('via');
    my ($rbase) = $rv =~ /^([^;]*)/;
    my ($pbase) = ($via[0] // '') =~ /^([^;]*)/;
    s/\s+/ /g, s/\s+$// for $rbase, $pbase;
    is($pbase, $rbase, "$label: Via sent-protocol and sent-by copied");
    my %want = %{ SipTest::Msg::params_of($rv) };
    if (defined $o{src_port}) {
        if (exists $want{rport}) {
            $want{rport} = $o{src_port};
            $want{received} = '127.0.0.1';
        }
        is_deeply(SipTest::Msg::params_of($via[0]), \%want, "$label: Via params (branch, received, rport)")
            or diag("request Via: $rv\nresponse Via: " . ($via[0] // 'none'));
    } else {
        is(SipTest::Msg::params_of($via[0])->{branch}, $want{branch}, "$label: Via branch copied");
    }
    for my $h ('from', 'call-id', 'cseq') {
        is($resp->header($h), $req->header($h), "$label: $h copied");
        is(scalar(my @x = $resp->headers($h)), 1, "$label: single $h header");
    }
    my $to = $resp->header('to') // '';
    my $rto = $req->header('to');
    if ($resp->code == 100) {
        like($to, qr/^\Q$rto\E/, "$label: To copied");
    } else {
        like($to, qr/^\Q$rto\E;\s*tag=[^;\s]+$/i, "$label: To copied with a tag added");
    }
    my $cl = $resp->header('content-length');
    ok(defined $cl, "$label: Content-Length present");
    is($cl, length($resp->body), "$label: Content-Length matches body") if defined $cl;
    ok($resp->head !~ /(?<!\r)\n/ && $resp->raw =~ /^\Q$resp->{head}\E\r\n\r\n/,
       "$label: CRLF line ends in the response header");
}

# Simple HTTP GET, returns the raw response (or '').
# The mod_sip counters of /server-status?auto ({ SipRequests => n, ... }; {}
# when the page cannot be fetched): the vhost needs mod_status and a
# <Location /server-status> with SetHandler server-status.
sub sip_counters {
    my ($self) = @_;
    my $buf = $self->http_get('/server-status?auto');
    my %c;
    $c{$1} = $2 while $buf =~ /^(Sip\w+):\s*(\d+)\s*$/mg;
    return \%c;
}

sub http_get {
    my ($self, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{http_port},
                                  Proto => 'tcp', Timeout => 5) or return '';
    print $s "GET " . ($path // '/') . " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $end = time + 5;
    while ($sel->can_read($end - time > 0 ? $end - time : 0)) {
        my $n = sysread($s, my $b, 65536) or last;
        $buf .= $b;
    }
    return $buf;
}

# ---------------------------------------------------------------------- SIPp
# Run SIPp (Debian package sip-tester) in the background as UAC or UAS, wait
# for it, check its exit code and statistics, and read its message trace.
#
#   my $uas = $t->sipp_start(name => 'uas', sf => 'proxy-uas-call.xml', m => 1);
#   my $uac = $t->sipp_start(name => 'uac', sf => 'proxy-uac-call.xml', m => 1,
#                            remote => '127.0.0.1:' . $uas->{port},
#                            rsa => '127.0.0.1:' . $t->sip_port, service => 'bob');
#   $t->sipp_wait($_) for $uac, $uas;
#   $t->sipp_ok($uac, calls => 1);                  # 5 tests
#   my @inv = SipTest::sipp_msgs($uas, dir => 'received', method => 'INVITE');
#
# sf is a file name in t/sipp/ (or a path).  Every run gets -nostdin
# -timeout 30s -timeout_error -buff_size 4194304 -trace_stat -stf -trace_msg
# -trace_err, -i 127.0.0.1 and an explicit -p (a free port unless given).

our $SIPP = $ENV{SIPP} || '/usr/bin/sipp';

sub sipp_bin { $SIPP }

# True when sipp is executable; otherwise a failing test (never a skip).
sub sipp_available {
    return 1 if -x $SIPP;
    fail("sipp available at $SIPP (install Debian package sip-tester)");
    return 0;
}

# Is something bound to 127.0.0.1:$port ('udp') or listening on it ('tcp')?
sub port_bound {
    my ($port, $proto) = @_;
    my $want = sprintf '0100007F:%04X', $port;
    open(my $fh, '<', "/proc/net/$proto") or return 0;
    while (my $l = <$fh>) {
        my @f = split ' ', $l;
        next unless @f > 3 && $f[1] eq $want;
        return 1 if $proto eq 'udp' || $f[3] eq '0A';
    }
    return 0;
}

# Options: name (unique per server object), sf, port, transport (u1, t1, ...),
# m, r, d, service, remote (host:port), rsa, keys => { k => v } (-key),
# timeout (default '30s'), args => [ more sipp arguments ].
# Returns a handle (hashref) once sipp has bound its port.
sub sipp_start {
    my ($self, %o) = @_;
    my $name = $o{name} // 'sipp';
    my $sf = $o{sf} // die "sipp_start: sf missing\n";
    $sf = "$REPO/t/sipp/$sf" unless $sf =~ m{/};
    my $port = $o{port} // free_port();
    my $tr = $o{transport} // 'u1';
    my $dir = $self->{dir};
    my %h = (name => $name, port => $port, sf => $sf, transport => $tr,
             stf => "$dir/sipp-$name.csv", out => "$dir/sipp-$name.out",
             msgfile => "$dir/sipp-$name-messages.log", errfile => "$dir/sipp-$name-errors.log");
    unlink @h{qw(stf out msgfile errfile)};
    my @cmd = ($SIPP, '-sf', $sf, '-i', '127.0.0.1', '-p', $port, '-t', $tr,
               '-m', $o{m} // 1, '-r', $o{r} // 10,
               '-nostdin', '-timeout', $o{timeout} // '30s', '-timeout_error',
               '-buff_size', 4194304, '-trace_stat', '-stf', $h{stf},
               '-trace_msg', '-message_file', $h{msgfile},
               '-trace_err', '-error_file', $h{errfile});
    push @cmd, '-s', $o{service} if defined $o{service};
    push @cmd, '-d', $o{d} if defined $o{d};
    push @cmd, '-rsa', $o{rsa} if defined $o{rsa};
    push @cmd, map { ('-key', $_, $o{keys}{$_}) } sort keys %{ $o{keys} || {} };
    push @cmd, @{ $o{args} || [] };
    push @cmd, $o{remote} if defined $o{remote};
    $h{cmd} = \@cmd;
    $h{t0} = time;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        chdir $dir;
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $h{out});
        open(STDERR, '>&', \*STDOUT);
        { no warnings 'exec'; exec @cmd; }
        POSIX::_exit(127);
    }
    $h{pid} = $pid;
    push @{ $self->{sipps} }, \%h;
    my $proto = $tr =~ /^t/ ? 'tcp' : 'udp';
    wait_until(5, sub {
        return 1 if port_bound($port, $proto);
        return 1 if waitpid($pid, POSIX::WNOHANG()) == $pid && do { $h{rc} = $? >> 8; $h{done} = 1; $h{elapsed} = time - $h{t0}; 1 };
        return 0;
    }, 0.02);
    return \%h;
}

# Wait (up to $timeout s, default 60) for sipp to exit; kills it after that.
# Sets done, rc (exit code), elapsed (s) and stats (last line of the CSV).
sub sipp_wait {
    my ($self, $h, $timeout) = @_;
    unless ($h->{done} || $h->{killed}) {
        my $end = time + ($timeout // 60);
        while (1) {
            my $r = waitpid($h->{pid}, POSIX::WNOHANG());
            if ($r == $h->{pid}) {
                $h->{rc} = $? >> 8;
                $h->{done} = 1;
                $h->{elapsed} = time - $h->{t0};
                last;
            }
            if ($r < 0 || time > $end) {
                kill 'KILL', $h->{pid};
                waitpid($h->{pid}, 0);
                $h->{killed} = 1;
                $h->{rc} = -1;
                $h->{elapsed} = time - $h->{t0};
                last;
            }
            sleep 0.05;
        }
    }
    $h->{stats} = sipp_stats($h->{stf});
    return $h;
}

# The last statistics line of a -trace_stat CSV as a hash (undef if none).
sub sipp_stats {
    my ($file) = @_;
    open(my $fh, '<', $file) or return undef;
    my @lines = grep { /\S/ } <$fh>;
    close $fh;
    return undef unless @lines >= 2;
    chomp(my $head = $lines[0]);
    chomp(my $last = $lines[-1]);
    my %s;
    @s{ split /;/, $head } = split /;/, $last;
    return \%s;
}

# Assert that sipp $h ended by itself with exit code 0, $o{calls} successful
# and 0 failed calls (5 tests).  Diagnostics (output, errors, the command) on
# failure.  Returns true when all passed.
sub sipp_ok {
    my ($self, $h, %o) = @_;
    $self->sipp_wait($h, $o{timeout});
    my $calls = $o{calls} // 1;
    my $n = $o{label} // "sipp $h->{name}";
    my $s = $h->{stats};
    my $all = 1;
    $all = (ok($h->{done}, "$n finished by itself")) && $all;
    $all = (is($h->{rc}, 0, "$n exit code 0")) && $all;
    $all = (ok($s, "$n wrote statistics")) && $all;
    $all = (is($s && $s->{'SuccessfulCall(C)'}, $calls, "$n: $calls successful call(s)")) && $all;
    $all = (is($s && $s->{'FailedCall(C)'}, 0, "$n: 0 failed calls")) && $all;
    $self->sipp_diag($h) unless $all;
    return $all;
}

sub _slurp_tail {
    my ($f, $max) = @_;
    open(my $fh, '<', $f) or return '';
    local $/;
    my $txt = <$fh> // '';
    $txt = '...' . substr($txt, -$max) if length $txt > $max;
    return $txt;
}

sub sipp_diag {
    my ($self, $h) = @_;
    diag("sipp $h->{name}: rc=" . ($h->{rc} // 'none') . sprintf(', %.1fs', $h->{elapsed} // 0)
         . "\ncommand: @{ $h->{cmd} }");
    for my $f (@{$h}{qw(out errfile msgfile)}) {
        next unless -s $f;
        diag("--- $f:\n" . _slurp_tail($f, 6000));
    }
}

# Parse a sipp -trace_msg file (or a handle's): list of hashes
#   { time (epoch s), proto (UDP|TCP), dir (sent|received), msg (SipTest::Msg) }
sub sipp_trace {
    my ($h) = @_;
    my $file = ref $h ? $h->{msgfile} : $h;
    open(my $fh, '<', $file) or return ();
    local $/;
    my $txt = <$fh> // '';
    close $fh;
    my @out;
    # (a "message voluntary lost" note is not followed by a newline, so the
    # separator need not start a line)
    my @parts = split /-{40,} (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d(?:\.\d+)?)[ \t]*\r?\n/, $txt;
    shift @parts;
    while (@parts >= 7) {
        my ($Y, $M, $D, $h, $mi, $s, $body) = splice @parts, 0, 7;
        next unless $body =~ s/^(UDP|TCP|TLS|SCTP) message (sent|received)[^\n]*\n\r?\n//;
        my ($proto, $dir) = ($1, $2);
        $body =~ s/\w+ message (?:\(retrans\) )?(?:voluntary )?lost \([^)]*\)\.//g;
        $body =~ s/(?:\r?\n)+\z/\r\n\r\n/ unless $body =~ /\r?\n\r?\n\S/;
        my $t = POSIX::mktime(int $s, $mi, $h, $D, $M - 1, $Y - 1900, 0, 0, -1) + ($s - int $s);
        push @out, { time => $t, proto => $proto, dir => $dir, msg => parse_msg($body) };
    }
    return @out;
}

# How many transmissions sipp dropped on purpose (scenario attribute lost=).
sub sipp_lost_count {
    my ($h) = @_;
    open(my $fh, '<', ref $h ? $h->{msgfile} : $h) or return 0;
    local $/;
    my $txt = <$fh> // '';
    my $n = () = $txt =~ /message voluntary lost/g;
    return $n;
}

# Messages of a trace selected by dir, method (requests), code (responses),
# cseq_method; list of SipTest::Msg (with o{full} the trace entries).
sub sipp_msgs {
    my ($h, %o) = @_;
    my @e = sipp_trace($h);
    @e = grep { $_->{dir} eq $o{dir} } @e if $o{dir};
    @e = grep { !$_->{msg}->is_response && ($_->{msg}->method // '') eq $o{method} } @e if $o{method};
    @e = grep { $_->{msg}->is_response && $_->{msg}->code == $o{code} } @e if defined $o{code};
    @e = grep { ($_->{msg}->header('cseq') // '') =~ /\s\Q$o{cseq_method}\E\s*$/i } @e if $o{cseq_method};
    return $o{full} ? @e : map { $_->{msg} } @e;
}

# Kill every sipp this object started that is still running (END, stop).
sub sipp_kill_all {
    my ($self) = @_;
    for my $h (@{ $self->{sipps} || [] }) {
        next if $h->{done} || $h->{killed};
        if (waitpid($h->{pid}, POSIX::WNOHANG()) == 0) {
            kill 'KILL', $h->{pid};
            waitpid($h->{pid}, 0);
        }
        $h->{killed} = 1;
    }
}

# ------------------------------------------------------------------ messages

package SipTest::Msg;
use strict;
use warnings;

sub parse {
    my ($class, $raw) = @_;
    return undef unless defined $raw;
    my $self = bless { raw => $raw, headers => [] }, $class;
    my ($head, $body);
    if ($raw =~ /\r?\n\r?\n/) {
        $head = substr($raw, 0, $-[0]);
        $body = substr($raw, $+[0]);
    } else {
        ($head, $body) = ($raw, '');
    }
    $self->{head} = $head;
    $self->{body} = $body;
    my @lines = split /\r?\n/, $head;
    my $first = shift @lines // '';
    $self->{start_line} = $first;
    if ($first =~ m{^(SIP/\d+\.\d+) (\d{3}) ?(.*)$}) {
        @{$self}{qw(version code reason)} = ($1, $2, $3);
    } elsif ($first =~ m{^(\S+) (\S+) (SIP/\d+\.\d+)$}) {
        @{$self}{qw(method uri version)} = ($1, $2, $3);
    } else {
        $self->{invalid} = 1;
    }
    my @h;
    for my $l (@lines) {
        if ($l =~ /^[ \t]/ && @h) { $h[-1][1] .= ' ' . ($l =~ s/^\s+//r); next }
        if ($l =~ /^([^:\s]+)[ \t]*:[ \t]*(.*?)[ \t]*$/) {
            push @h, [ $1, $2 ];
        } else {
            $self->{bad_lines}++;
        }
    }
    $self->{headers} = \@h;
    return $self;
}

sub raw         { $_[0]{raw} }
sub body        { $_[0]{body} }
sub code        { $_[0]{code} // 0 }
sub reason      { $_[0]{reason} }
sub method      { $_[0]{method} }
sub uri         { $_[0]{uri} }
sub version     { $_[0]{version} }
sub start_line  { $_[0]{start_line} }
sub is_response { defined $_[0]{code} }
sub is_final    { defined $_[0]{code} && $_[0]{code} >= 200 }
sub head        { $_[0]{head} }

# All header lines (name as sent, value) in order.
sub header_list { @{ $_[0]{headers} } }

# All values of a header (compact forms folded in), one per header line.
sub headers {
    my ($self, $name) = @_;
    my $c = SipTest::canon_header($name);
    return map { $_->[1] } grep { SipTest::canon_header($_->[0]) eq $c } @{ $self->{headers} };
}

# First value of a header, or undef.
sub header { my @v = $_[0]->headers($_[1]); return $v[0] }

# All comma separated elements of a header (Via, Allow ...), quotes honoured.
sub header_elems {
    my ($self, $name) = @_;
    my @out;
    for my $v ($self->headers($name)) {
        my @parts = ($v =~ /((?:[^,"]|"[^"]*")+)/g);
        push @out, map { s/^\s+|\s+$//gr } @parts;
    }
    return grep { length } @out;
}

# Parameters of a header value like 'SIP/2.0/UDP h:p;branch=x;rport=5' or
# '<sip:a@b>;tag=x' -> { branch => 'x', rport => 5 } (flag params -> '').
sub params_of {
    my ($v) = @_;
    $v //= '';
    $v =~ s/^[^<]*<[^>]*>//;               # drop name-addr
    my %p;
    my @p = split /;/, $v;
    shift @p;                             # value part
    for (@p) {
        s/^\s+|\s+$//g;
        my ($k, $val) = split /=/, $_, 2;
        $p{ lc $k } = $val // '';
    }
    return \%p;
}

sub header_param {
    my ($self, $name, $param) = @_;
    my $v = $self->header($name);
    return undef unless defined $v;
    return params_of($v)->{ lc $param };
}

sub to_tag   { $_[0]->header_param('to', 'tag') }
sub from_tag { $_[0]->header_param('from', 'tag') }

sub as_string { $_[0]{raw} }

1;
