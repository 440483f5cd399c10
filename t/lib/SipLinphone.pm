package SipLinphone;
# A second real SIP user agent for the interop tests: linphonec (Debian
# package linphone-cli), headless, commands on its standard input (a pipe
# this object holds open), its console output in DIR/linphonec.out.
#
#   my $c = SipLinphone->new(t => $t, user => 'carol', password => 'pw',
#                            transport => 'tcp');       # waits for "registered"
#   $c->send('call sip:alice@127.0.0.1:5060');
#   $c->wait_output(qr/Call \d+ with \S+ connected/, 5);
#   $c->send('terminate');
#   is($c->active_calls, 0);
#   $c->stop;
#
# Configuration notes (linphonec 5.1): [net] auto_net_state_mon=0 or it
# opens no SIP socket in a container; [sip] bind_address keeps the SIP
# socket on loopback; [net] nat_address + firewall_policy=1 put 127.0.0.1
# into its SDP; sip_port=0 disables UDP (a TCP-only phone); -a answers
# incoming calls by itself.

use strict;
use warnings;
use Test::More;
use POSIX ();
use IO::Handle;
use File::Path ();
use Time::HiRes qw(time sleep);
use SipTest qw(free_port wait_until);
use SipPhone ();

our $LINPHONEC = $ENV{LINPHONEC} || '/usr/bin/linphonec';

sub available {
    return 1 if -x $LINPHONEC;
    fail("linphonec available at $LINPHONEC (Debian package linphone-cli)");
    return 0;
}

sub version {
    my $out = `$LINPHONEC -v 2>&1 </dev/null`;
    return $out =~ /version:\s*(\S+)/ ? $1 : 'unknown';
}

# Options: t, user, password, name, transport ('udp' | 'tcp': TCP only),
# server_port (default $t->sip_port), realm (default 'sip.test'),
# timeout (registration, default 10).
sub new {
    my ($class, %o) = @_;
    my $t = $o{t} or die "SipLinphone: t missing\n";
    my $self = bless {
        t => $t, user => $o{user}, password => $o{password} // '', name => $o{name} // $o{user},
        transport => lc($o{transport} // 'udp'), server_port => $o{server_port} // $t->sip_port,
        realm => $o{realm} // 'sip.test', owner => $$,
    }, $class;
    $self->{dir} = $t->dir . "/linphone-$self->{name}";
    File::Path::make_path("$self->{dir}/.local/share/linphone", "$self->{dir}/.config");
    $self->{out} = "$self->{dir}/linphonec.out";
    $self->{sip_port} = free_port();
    $self->_write_rc;
    SipPhone::track($self);
    $self->start($o{timeout} // 10);
    return $self;
}

sub name     { $_[0]{name} }
sub sip_port { $_[0]{sip_port} }
sub registered { $_[0]{registered} }

sub _write_rc {
    my ($self) = @_;
    my $tcp = $self->{transport} eq 'tcp';
    my $tp = $tcp ? ';transport=tcp' : '';
    my ($udp_port, $tcp_port) = $tcp ? (0, $self->{sip_port}) : ($self->{sip_port}, 0);
    open(my $fh, '>', "$self->{dir}/rc") or die "$self->{dir}/rc: $!";
    print $fh <<"EOC";
[sip]
bind_address=127.0.0.1
use_ipv6=0
sip_port=$udp_port
sip_tcp_port=$tcp_port
sip_tls_port=0
default_proxy=0
[net]
auto_net_state_mon=0
nat_address=127.0.0.1
firewall_policy=1
[sound]
playback_dev_id=
capture_dev_id=
[video]
capture=0
display=0
[proxy_0]
reg_proxy=<sip:127.0.0.1:$self->{server_port}$tp>
reg_route=<sip:127.0.0.1:$self->{server_port}$tp;lr>
reg_identity=sip:$self->{user}\@127.0.0.1:$self->{server_port}
reg_expires=600
reg_sendregister=1
[auth_info_0]
username=$self->{user}
passwd=$self->{password}
realm=$self->{realm}
EOC
    close $fh;
}

sub start {
    my ($self, $timeout) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        close $w;
        open(STDIN, '<&', $r) or POSIX::_exit(126);
        open(STDOUT, '>', $self->{out});
        open(STDERR, '>&', \*STDOUT);
        chdir $self->{dir};
        $ENV{HOME} = $self->{dir};
        { no warnings 'exec'; exec $LINPHONEC, '-c', "$self->{dir}/rc", '-a'; }
        POSIX::_exit(127);
    }
    close $r;
    $w->autoflush(1);
    @{$self}{qw(pid in)} = ($pid, $w);
    my $ok = wait_until($timeout, sub {
        return 1 if SipPhone::_reap($self);
        my $mark = length $self->output;
        $self->send('status register');
        my $l = $self->wait_output(qr/^registered(?:=|,).*$/m, 1, $mark) // '';
        return $l =~ /^registered,/ ? 1 : 0;
    }, 0.3);
    $self->{registered} = $ok && $self->{pid} ? 1 : 0;
    return 1;
}

sub send {
    my ($self, $line) = @_;
    return 0 unless $self->{in};
    diag("[$self->{name} <-] $line") if $SipTest::DEBUG;
    local $SIG{PIPE} = 'IGNORE';
    return print { $self->{in} } "$line\n";
}

sub output {
    my ($self) = @_;
    open(my $fh, '<', $self->{out}) or return '';
    local $/;
    return <$fh> // '';
}

sub mark { length $_[0]->output }

# Wait until the output after byte $from (default: everything) matches $re;
# returns the match or undef.
sub wait_output {
    my ($self, $re, $timeout, $from) = @_;
    my $got;
    wait_until($timeout // 5, sub {
        my $o = $self->output;
        $o = substr($o, $from) if $from && $from <= length $o;
        my @m = $o =~ /($re)/;
        $got = $m[0] if @m;
        return @m ? 1 : 0;
    }, 0.1);
    return $got;
}

# Number of calls from the "calls" command (0 for "No active call.").
sub active_calls {
    my ($self) = @_;
    my $mark = $self->mark;
    $self->send('calls');
    my $o = '';
    wait_until(3, sub { $o = substr($self->output, $mark); $o =~ /No active call|-{20,}\n(?:.*\n)*?linphonec>/ }, 0.1);
    return 0 if $o =~ /No active call/;
    my @rows = $o =~ /^\s*\d+\s+\|/mg;
    return scalar @rows;
}

sub tail {
    my ($self, $n) = @_;
    my @l = grep { !/soundcard|bctbx|mkv|ToneManager/ } split /\n/, $self->output;
    @l = @l[-($n // 15) .. -1] if @l > ($n // 15);
    return join "\n", @l;
}

# "quit", then TERM and KILL by pid if it does not go; true if it quit.
sub stop {
    my ($self) = @_;
    return 1 unless $self->{pid} && $$ == $self->{owner};
    $self->send('quit');
    my $clean = SipPhone::end_process($self);
    close $self->{in} if $self->{in};
    delete $self->{in};
    return $clean;
}

1;
