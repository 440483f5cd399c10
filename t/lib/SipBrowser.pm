package SipBrowser;
# The browser phone (www/phone/) in Debian's headless Chromium, driven by
# t/browser/drive.js (playwright-core from the npm registry), for
# t/browser.t.
#
#   SipBrowser::available() or exit 1;      # failing tests name what is missing
#   my $b = SipBrowser->new(dir => $t->dir);
#   my $r = $b->cmd({ cmd => 'open', tab => 'a', url => "http://127.0.0.1:$port/phone/" });
#   $b->ok_cmd({ cmd => 'wait', tab => 'a', id => 'reg-state', match => '^registered$' },
#              'registered');
#   $b->quit;                               # true when the driver exited 0
#
# The driver runs in a process group of its own and Chromium with a profile
# directory of this object's: at the end every process of that group and
# every process whose command line names that profile is killed by pid.

use strict;
use warnings;
use Test::More;
use POSIX ();
use IO::Select;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use Scalar::Util ();
use SipTest qw(wait_until procs);

our $CHROMIUM = $ENV{CHROMIUM} || '/usr/bin/chromium';
my $REPO = SipTest::repo();
my $JSON = JSON::PP->new->canonical;
my %LIVE;

sub repo { $REPO }

# node from PATH (undef when there is none)
sub node_bin {
    for my $d (split /:/, $ENV{PATH} // '') {
        return "$d/node" if length $d && -x "$d/node";
    }
    return undef;
}

# The JsSIP build the page loads
sub jssip_js { "$REPO/node_modules/jssip/dist/jssip.min.js" }

# Everything the browser test needs, each missing piece a failing test with
# what installs it (make test does): never a skip.
sub available {
    my $ok = 1;
    $ok = ok(-x $CHROMIUM, "chromium at $CHROMIUM (Debian package chromium; make test installs it)")
        && $ok;
    $ok = ok(node_bin(), 'node in PATH (make test installs nodejs when missing)') && $ok;
    $ok = ok(-d "$REPO/node_modules/playwright-core",
             'node_modules/playwright-core present (make test runs npm ci)') && $ok;
    $ok = ok(-f jssip_js(), 'node_modules/jssip/dist/jssip.min.js present (make test runs npm ci)')
        && $ok;
    return $ok;
}

sub new {
    my ($class, %o) = @_;
    my $dir = $o{dir} // die "SipBrowser: dir missing\n";
    my $self = bless { owner => $$, dir => $dir, profile => "$dir/chromium-profile",
                       log => "$dir/drive.log", buf => '', timeout => $o{timeout} // 240 }, $class;
    mkdir $self->{profile};
    pipe(my $in_r, my $in_w) or die "pipe: $!";
    pipe(my $out_r, my $out_w) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        POSIX::setpgid(0, 0);
        close $in_w;
        close $out_r;
        POSIX::dup2(fileno $in_r, 0);
        POSIX::dup2(fileno $out_w, 1);
        open(STDERR, '>', $self->{log});
        chdir $REPO;
        { no warnings 'exec';
          exec node_bin(), "$REPO/t/browser/drive.js", '--profile', $self->{profile},
               '--chromium', $CHROMIUM, '--timeout', $self->{timeout}; }
        POSIX::_exit(127);
    }
    close $in_r;
    close $out_w;
    $in_w->autoflush(1);
    @{$self}{qw(pid in out)} = ($pid, $in_w, $out_r);
    $LIVE{ Scalar::Util::refaddr($self) } = $self;
    Scalar::Util::weaken($LIVE{ Scalar::Util::refaddr($self) });
    return $self;
}

sub profile { $_[0]{profile} }

# One command; its answer as a hash ({ ok => 0, error => ... } on a time-out
# or when the driver is gone).
sub cmd {
    my ($self, $c, $timeout) = @_;
    $timeout //= ($c->{timeout} // 10) + 30;
    return { ok => 0, error => 'driver not running' } unless $self->{pid};
    local $SIG{PIPE} = 'IGNORE';
    print { $self->{in} } $JSON->encode($c) . "\n"
        or return { ok => 0, error => "driver stdin: $!" };
    my $sel = IO::Select->new($self->{out});
    my $end = time + $timeout;
    while (1) {
        while ($self->{buf} =~ s/^([^\n]*)\n//) {
            my $line = $1;
            next unless $line =~ /^DRIVE (.*)$/;
            my $r = eval { $JSON->decode($1) };
            return $r // { ok => 0, error => "bad answer line: $line" };
        }
        my $left = $end - time;
        return { ok => 0, error => "no answer to $c->{cmd} within ${timeout}s" . $self->_stderr }
            if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($self->{out}, my $b, 65536);
        return { ok => 0, error => "driver exited during $c->{cmd}" . $self->_stderr } unless $n;
        $self->{buf} .= $b;
    }
}

# A command as one test named $name; the answer.  On failure the error, the
# page's state and its console go to diag.
sub ok_cmd {
    my ($self, $c, $name) = @_;
    my $r = $self->cmd($c);
    ok($r->{ok}, $name) or diag(explain_failure($r));
    return $r;
}

sub explain_failure {
    my ($r) = @_;
    my $s = "error: " . ($r->{error} // '?');
    if (my $st = $r->{state}) {
        $s .= "\npage: $_ = " . ($st->{$_} // '') for grep { $_ ne 'log' } sort keys %$st;
        $s .= "\npage log:\n" . ($st->{log} // '');
    }
    $s .= "\nconsole:\n" . join("\n", @{ $r->{console} }) if $r->{console} && @{ $r->{console} };
    return $s;
}

sub _stderr {
    my ($self) = @_;
    open(my $fh, '<', $self->{log}) or return '';
    local $/;
    my $t = <$fh> // '';
    $t = substr($t, -3000) if length $t > 3000;
    return length $t ? "\ndrive.js stderr:\n$t" : '';
}

# Ask the driver to close the browser and exit; true when it exited 0.
sub quit {
    my ($self) = @_;
    return 0 unless $self->{pid};
    my $r = $self->cmd({ cmd => 'quit' }, 20);
    close $self->{in};
    my $pid = $self->{pid};
    my $done = wait_until(15, sub { waitpid($pid, POSIX::WNOHANG()) == $pid }, 0.05);
    my $rc = $done ? $? : -1;
    $self->kill_all;
    return $r->{ok} && $rc == 0;
}

# Chromium processes of this run: those naming our profile directory.
sub browser_pids {
    my ($self) = @_;
    my $p = $self->{profile};
    return map { $_->{pid} } grep { index($_->{cmd}, $p) >= 0 } procs();
}

# Kill by pid what this object started: the driver's process group and
# every process naming our profile (Chromium runs in a group of its own).
sub kill_all {
    my ($self) = @_;
    return unless $self->{owner} == $$;
    if (my $pid = $self->{pid}) {
        kill 'KILL', -$pid;
        waitpid($pid, 0);
        delete $self->{pid};
    }
    for (1 .. 3) {
        my @p = $self->browser_pids or last;
        kill 'KILL', @p;
        sleep 0.2;
    }
}

END {
    my $rc = $?;
    $_->kill_all for grep { defined } values %LIVE;
    $? = $rc;
}

1;
