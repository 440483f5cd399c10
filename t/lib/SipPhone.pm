package SipPhone;
# A real SIP user agent for the interop tests: one baresip (Debian package
# baresip) per phone, headless, in its own config directory under the test
# server's temp dir, on its own free loopback ports, driven through its
# ctrl_tcp module.
#
#   my $a = SipPhone->new(t => $t, user => 'alice', password => 'alicepw',
#                         transport => 'tcp');          # waits for REGISTER_OK
#   $a->cmd(dial => 'sip:bob@127.0.0.1:' . $t->sip_port);
#   my $e = $a->wait_event(type => 'CALL_ESTABLISHED', timeout => 5);
#   $a->cmd('hangup');
#   $a->wait_event(type => 'CALL_CLOSED');
#   is($a->active_calls, 0);
#   my @m = $a->trace;           # every SIP message it sent or received
#   $a->stop;                    # quit, reap; kills by pid if it must
#
# ctrl_tcp (baresip 1.0.0, modules/ctrl_tcp): netstrings ("LEN:PAYLOAD,",
# LEN in decimal, no leading zeros) carrying JSON objects, both ways on one
# TCP connection:
#   command  {"command":"dial","params":"sip:...","token":"7"}
#   response {"response":true,"ok":true|false,"data":"text","token":"7"}
#   event    {"event":true,"class":"call"|"register"|...,"type":"CALL_ESTABLISHED",
#             "accountaor":"sip:...","direction":"incoming"|"outgoing",
#             "peeruri":"sip:...","id":"<call id>","param":"..."}
# Commands are the menu's long names (dial, hangup, hold, resume, listcalls,
# answermode, quit; message from the contact module).
#
# baresip runs with -s (SIP trace on stdout): the trace goes to
# DIR/baresip.out; trace() parses it into SipTest::Msg objects.
#
# Ports: baresip binds its sip_listen port for UDP and TCP and the next port
# for TLS, so both must be free; ctrl_tcp gets a port of its own.  RTP binds
# ephemeral ports on 127.0.0.1 (net_interface 127.0.0.1).

use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use POSIX ();
use File::Path ();
use Time::HiRes qw(time sleep);
use Scalar::Util ();
use SipTest qw(parse_msg free_port wait_until);
use SipDigest ();

our $BARESIP = $ENV{BARESIP} || '/usr/bin/baresip';
our $MODULES = '/usr/lib/baresip/modules';
my %LIVE;
my $JSON = JSON::PP->new->canonical;

sub available {
    return 1 if -x $BARESIP && -f "$MODULES/ctrl_tcp.so" && -f "$MODULES/aubridge.so";
    fail("baresip with ctrl_tcp and aubridge available ($BARESIP; Debian package baresip)");
    return 0;
}

# The version baresip prints (e.g. "1.0.0").
sub version {
    my $out = `$BARESIP -h 2>&1`;
    return $out =~ /baresip v(\S+)/ ? $1 : 'unknown';
}

sub _port_free {
    my ($p) = @_;
    my $tcp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p, Proto => 'tcp',
                                    Listen => 1, ReuseAddr => 0) or return 0;
    my $udp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p, Proto => 'udp') or return 0;
    return 1;
}

# A port P with P and P+1 free (TCP and UDP): SIP, and the TLS listener.
sub _sip_port_pair {
    for (1 .. 200) {
        my $p = free_port();
        return $p if $p < 65535 && _port_free($p + 1);
    }
    die "SipPhone: no free port pair\n";
}

# Options:
#   t          the SipTest server (its dir holds the phone's files)
#   user, password, name (default user; unique per server)
#   transport  'udp' (default) | 'tcp'
#   server_port  SIP port of the registrar/proxy (default $t->sip_port)
#   outbound   1 (default): the server is the outbound proxy; 0: none
#   register   1 (default): wait for REGISTER_OK; 0: no registration at all
#   regint     registration interval (default 600)
#   answermode 'auto' (default) | 'manual'
#   contacts   [ 'sip:...' ] for the contacts file (the first is "current")
#   account    more account parameters (";sipnat=outbound"), or none
#   timeout    seconds to wait for start/registration (default 10)
sub new {
    my ($class, %o) = @_;
    my $t = $o{t} or die "SipPhone: t missing\n";
    my $user = $o{user} or die "SipPhone: user missing\n";
    my $self = bless {
        t => $t, user => $user, password => $o{password} // '', name => $o{name} // $user,
        transport => lc($o{transport} // 'udp'), server_port => $o{server_port} // $t->sip_port,
        outbound => $o{outbound} // 1, register => $o{register} // 1, regint => $o{regint} // 600,
        answermode => $o{answermode} // 'auto', contacts => $o{contacts} || [],
        account => $o{account} // '',
        events => [], responses => [], buf => '', token => 0, owner => $$,
    }, $class;
    $self->{dir} = $t->dir . "/phone-$self->{name}";
    File::Path::make_path($self->{dir});
    $self->{out} = "$self->{dir}/baresip.out";
    $self->{sip_port} = _sip_port_pair();
    $self->{ctrl_port} = free_port();
    $self->_write_config;
    track($self);
    $self->start($o{timeout} // 10);
    return $self;
}

sub name      { $_[0]{name} }
sub user      { $_[0]{user} }
sub sip_port  { $_[0]{sip_port} }
sub dir       { $_[0]{dir} }
sub transport { $_[0]{transport} }
sub pid       { $_[0]{pid} }
sub events    { @{ $_[0]{events} } }

# The AoR URI this phone registers (with ;transport=tcp for TCP).
sub aor {
    my ($self) = @_;
    return "sip:$self->{user}\@127.0.0.1:$self->{server_port}" . ($self->{transport} eq 'tcp' ? ';transport=tcp' : '');
}

# A URI for $user on the server (baresip adds ;transport=tcp itself when
# the account's outbound proxy or AoR says TCP).
sub uri_for {
    my ($self, $user) = @_;
    return "sip:$user\@127.0.0.1:$self->{server_port}";
}

sub _write_config {
    my ($self) = @_;
    my $n = $self->{name};
    my $d = $self->{dir};
    open(my $fh, '>', "$d/config") or die "$d/config: $!";
    print $fh <<"EOC";
poll_method        epoll
sip_listen         127.0.0.1:$self->{sip_port}
net_interface      127.0.0.1
call_local_timeout 30
call_max_calls     4
audio_buffer       20
module_path        $MODULES
module             g711.so
module             aubridge.so
audio_player       aubridge,$n-play
audio_source       aubridge,$n-src
audio_alert        aubridge,$n-alert
${\ ($self->{account} =~ /sipnat=outbound/ ? "module_tmp         uuid.so\n" : '')}module_tmp         account.so
module_app         menu.so
module_app         contact.so
module_app         ctrl_tcp.so
ctrl_tcp_listen    127.0.0.1:$self->{ctrl_port}
EOC
    close $fh;
    my $tp = $self->{transport} eq 'tcp' ? ';transport=tcp' : '';
    my $acc = "<sip:$self->{user}\@127.0.0.1:$self->{server_port}$tp>;auth_pass=$self->{password}"
            . ";answermode=$self->{answermode}";
    $acc .= ";outbound=\"sip:127.0.0.1:$self->{server_port}$tp\"" if $self->{outbound};
    $acc .= $self->{register} ? ";regint=$self->{regint}" : ';regint=0';
    $acc .= $self->{account};
    open($fh, '>', "$d/accounts") or die "$d/accounts: $!";
    print $fh "$acc\n";
    close $fh;
    open($fh, '>', "$d/contacts") or die "$d/contacts: $!";
    print $fh qq{"c$_" <$self->{contacts}[$_]>\n} for 0 .. $#{ $self->{contacts} };
    close $fh;
}

sub start {
    my ($self, $timeout) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $self->{out});
        open(STDERR, '>&', \*STDOUT);
        { no warnings 'exec'; exec $BARESIP, '-f', $self->{dir}, '-s'; }
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $sock;
    wait_until($timeout, sub {
        return 1 if $self->_reap;
        $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{ctrl_port},
                                      Proto => 'tcp', Timeout => 1);
        return $sock ? 1 : 0;
    }, 0.05);
    unless ($sock) {
        diag("baresip $self->{name} did not open ctrl_tcp on $self->{ctrl_port}:\n" . $self->output_tail);
        die "SipPhone: baresip $self->{name} did not start\n";
    }
    $self->{sock} = $sock;
    $self->{sel} = IO::Select->new($sock);
    if ($self->{register}) {
        # The first REGISTER often completes before ctrl_tcp is connected,
        # so its event is lost: ask reginfo as well.
        my $end = time + $timeout;
        while (time < $end) {
            my $e = $self->wait_event(class => 'register', type => qr/^REGISTER_(OK|FAIL)$/, timeout => 0.2);
            if ($e) { $self->{registered} = $e->{type} eq 'REGISTER_OK' ? 1 : 0; last }
            my $r = $self->cmd('reginfo', '', 2);
            my $txt = ($r && $r->{data}) // '';
            $txt =~ s/\e\[[0-9;]*m//g;
            if ($txt =~ /\bOK\b/) { $self->{registered} = 1; last }
            if ($txt =~ /\bERR\b/) { $self->{registered} = 0; last }
        }
    }
    return 1;
}

sub registered { $_[0]{registered} }

# ------------------------------------------------------------- ctrl_tcp

sub _send_frame {
    my ($self, $obj) = @_;
    my $j = $JSON->encode($obj);
    my $s = $self->{sock} or return 0;
    my $frame = length($j) . ":$j,";
    diag("[$self->{name} ctrl <-] $frame") if $SipTest::DEBUG;
    return defined syswrite($s, $frame);
}

# Read what is available (waiting up to $wait s) and queue the frames.
sub _pump {
    my ($self, $wait) = @_;
    return 0 unless $self->{sock};
    my $got = 0;
    while ($self->{sel}->can_read($wait)) {
        my $n = sysread($self->{sock}, my $b, 65536);
        if (!$n) { delete $self->{sock}; last }
        $self->{buf} .= $b;
        $got = 1;
        $wait = 0;
    }
    while ($self->{buf} =~ /^(\d+):/) {
        my $len = $1;
        my $start = length($len) + 1;
        last if length($self->{buf}) < $start + $len + 1;
        my $payload = substr($self->{buf}, $start, $len);
        my $comma = substr($self->{buf}, $start + $len, 1);
        substr($self->{buf}, 0, $start + $len + 1) = '';
        die "SipPhone: bad netstring from $self->{name} (no comma)\n" unless $comma eq ',';
        diag("[$self->{name} ctrl ->] $payload") if $SipTest::DEBUG;
        my $m = eval { $JSON->decode($payload) };
        unless ($m) { diag("SipPhone $self->{name}: bad JSON: $payload"); next }
        $m->{time} = time;
        if ($m->{event}) { push @{ $self->{events} }, $m }
        elsif ($m->{response}) { push @{ $self->{responses} }, $m }
    }
    return $got;
}

# Run a command; returns its response {ok, data} or undef after $timeout s.
sub cmd {
    my ($self, $command, $params, $timeout) = @_;
    my $tok = 'tok' . ++$self->{token};
    $self->_send_frame({ command => $command, params => $params // '', token => $tok }) or return undef;
    my $end = time + ($timeout // 5);
    while (1) {
        my ($r) = grep { ($_->{token} // '') eq $tok } @{ $self->{responses} };
        return $r if $r;
        my $left = $end - time;
        return undef if $left <= 0;
        $self->_pump($left > 0.2 ? 0.2 : $left);
    }
}

sub _match {
    my ($e, %c) = @_;
    for my $k (qw(type class direction id param)) {
        next unless defined $c{$k};
        my $v = $e->{$k} // return 0;
        if (ref $c{$k} eq 'Regexp') { return 0 unless $v =~ $c{$k} }
        else { return 0 unless $v eq $c{$k} }
    }
    return 1;
}

# Wait for the first event (after position $c{from}, default: not yet
# consumed by a wait_event) matching type/class/direction/id/param (strings
# or regexps).  Returns the event or undef after timeout (default 5 s).
sub wait_event {
    my ($self, %c) = @_;
    my $from = $c{from} // $self->{consumed} // 0;
    my $end = time + ($c{timeout} // 5);
    while (1) {
        my $ev = $self->{events};
        for my $i ($from .. $#$ev) {
            next unless _match($ev->[$i], %c);
            $self->{consumed} = $i + 1 unless defined $c{from};
            return $ev->[$i];
        }
        my $left = $end - time;
        return undef if $left <= 0;
        $self->_pump($left > 0.2 ? 0.2 : $left);
    }
}

# Mark every event so far as seen (wait_event then only looks at new ones).
sub mark { my ($self) = @_; $self->_pump(0); $self->{consumed} = scalar @{ $self->{events} }; return $self->{consumed} }

# Let events arrive for $s seconds.
sub settle { my ($self, $s) = @_; my $end = time + $s; $self->_pump($end - time) while time < $end; }

# Number of calls baresip still has (listcalls: "--- Active calls (N) ---").
sub active_calls {
    my ($self) = @_;
    my $r = $self->cmd('listcalls') or return -1;
    return ($r->{data} // '') =~ /Active calls \((\d+)\)/ ? $1 : -1;
}

# ------------------------------------------------------------- SIP trace

sub output {
    my ($self) = @_;
    open(my $fh, '<', $self->{out}) or return '';
    local $/;
    my $t = <$fh> // '';
    return $t;
}

sub output_tail {
    my ($self, $max) = @_;
    my $t = $self->output;
    $max //= 4000;
    $t = '...' . substr($t, -$max) if length $t > $max;
    $t =~ s/\e\[[0-9;]*m//g;
    return $t;
}

# Every SIP message in the -s trace, in order, as hashes
#   { proto, src, dst, dir => 'sent'|'received', msg => SipTest::Msg }
# A message is ours (sent) when it is a request whose top Via is our
# address, or a response whose top Via is not.
sub trace {
    my ($self) = @_;
    my $txt = $self->output;
    my @out;
    while ($txt =~ /\e\[36;1m#\n(UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)\e\[;m/sg) {
        my ($proto, $src, $dst, $raw) = ($1, $2, $3, $4);
        my $m = parse_msg($raw);
        next if !$m || $m->{invalid};
        my ($via) = $m->header_elems('via');
        my $mine = ($via // '') =~ m{^SIP/2\.0/\w+\s+127\.0\.0\.1:$self->{sip_port}\b};
        my $dir = ($m->is_response xor $mine) ? 'sent' : 'received';
        push @out, { proto => $proto, src => $src, dst => $dst, dir => $dir, msg => $m };
    }
    return @out;
}

# Trace entries filtered by dir, method (requests), cseq (method of the CSeq,
# for responses), code.
sub msgs {
    my ($self, %o) = @_;
    my @e = $self->trace;
    @e = grep { $_->{dir} eq $o{dir} } @e if $o{dir};
    @e = grep { !$_->{msg}->is_response && $_->{msg}->method eq $o{method} } @e if $o{method};
    @e = grep { $_->{msg}->is_response } @e if $o{responses} || defined $o{code};
    @e = grep { $_->{msg}->code == $o{code} } @e if defined $o{code};
    @e = grep { ($_->{msg}->header('cseq') // '') =~ /\s\Q$o{cseq}\E\s*$/i } @e if $o{cseq};
    return @e;
}

# A short one-line-per-message flow of the trace, for diagnostics.
sub flow {
    my ($self, $last) = @_;
    my @l = map {
        sprintf "%s %-8s %s %s -> %s  %s", $self->{name}, $_->{dir}, $_->{proto}, $_->{src}, $_->{dst},
            $_->{msg}->start_line . ($_->{msg}->is_response ? ' (' . ($_->{msg}->header('cseq') // '') . ')' : '')
    } $self->trace;
    @l = @l[-$last .. -1] if $last && @l > $last;
    return join "\n", @l;
}

# ------------------------------------------------------------- the server

# A SipTest server configured like conf/run.conf.in (the configuration a
# new user copies: SIP access log, SipScriptTimeout 30, mod_status) plus
# digest authentication: SipAuth On in <Location "/"> with an htdigest file
# holding $o{users} ({ user => password }) for realm $o{realm}.
#   vhost => [ more vhost lines ], scripts => { ... } as for SipTest.
sub interop_server {
    my (%o) = @_;
    return SipTest->new(SipDigest::digest_server(
        realm => $o{realm} // 'sip.test', users => $o{users},
        conf => [ "LoadModule status_module $SipTest::MODDIR/mod_status.so",
                  'LogFormat "%h %{From}i %{To}i %t \\"%r\\" %>s" sip_common',
                  'CustomLog @DIR@/logs/sip_access.log sip_common' ],
        after => [ '<Location "/server-status">', '    SetHandler server-status', '</Location>' ],
        vhost_conf => join("\n", 'SipScriptTimeout 30', @{ $o{vhost} || [] }),
        scripts => $o{scripts} || {}));
}

# The server's /server-status?auto SIP counters as a hash ({} if the page
# cannot be fetched), read the way t/status.t reads them.
sub server_status {
    my ($t) = @_;
    return $t->sip_counters;
}

# ------------------------------------------------------------- stopping

# The client processes of the phones (baresip here, linphonec in
# SipLinphone.pm), objects with {pid, owner}: killed at exit if still there.
sub track {
    my ($obj) = @_;
    $LIVE{ Scalar::Util::refaddr($obj) } = $obj;
    Scalar::Util::weaken($LIVE{ Scalar::Util::refaddr($obj) });
}

sub _reap {
    my ($self) = @_;
    return 1 unless $self->{pid};
    my $r = waitpid($self->{pid}, POSIX::WNOHANG());
    if ($r == $self->{pid} || $r < 0) {
        $self->{status} = $?;
        delete $self->{pid};
        return 1;
    }
    return 0;
}

# Once the client was asked to quit: wait for it, then SIGTERM and SIGKILL
# by pid.  True when it exited on its own.
sub end_process {
    my ($self, $timeout) = @_;
    my $clean = wait_until($timeout // 5, sub { _reap($self) }, 0.05);
    for my $sig (qw(TERM KILL)) {
        last if $clean || !$self->{pid};
        kill $sig, $self->{pid};
        last if wait_until(3, sub { _reap($self) }, 0.05);
    }
    return $clean ? 1 : 0;
}

# Ask baresip to quit (it unregisters first); SIGTERM, then SIGKILL, by pid,
# if it does not go.  Returns true when it exited on its own after "quit".
sub stop {
    my ($self, $timeout) = @_;
    return 1 unless $self->{pid};
    return 1 if $$ != $self->{owner};
    $self->cmd('quit', '', 2) if $self->{sock};
    my $clean = end_process($self, $timeout);
    close $self->{sock} if $self->{sock};
    delete $self->{sock};
    return $clean;
}

END {
    for my $p (grep { defined } values %LIVE) {
        next unless $p->{pid} && $p->{owner} == $$;
        kill 'KILL', $p->{pid};
        waitpid($p->{pid}, 0);
    }
}

1;
