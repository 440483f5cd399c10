package SipDNS;
# A local authoritative DNS server for the tests (t/lib/sipdns.py, dnslib),
# on 127.0.0.1 and a free port, UDP and TCP.
#
#   my $dns = SipDNS->new(zone => <<'Z');
#   $ORIGIN example.test.
#   @        60 IN SOA ns hostmaster 1 3600 600 86400 30
#   @        60 IN NAPTR 10 50 "s" "SIP+D2U" "" _sip._udp
#   _sip._udp 60 IN SRV 10 60 5060 a
#   a        60 IN A 127.0.0.1
#   Z
#   server_conf => "SipDNSServer " . $dns->addr
#   $dns->set_zone($text);          # new records from the next query on
#   $dns->set_mode('silent');       # never answers; 'slow', 2.5: answers late
#   $dns->queries('example.test', 'NAPTR');   # how many such queries came in
#   $dns->log;                      # [ [time, name, type, proto], ... ]
#   $dns->clear_log; $dns->stop;
#
# The zone text is master-file syntax (dnslib); unknown names get NXDOMAIN,
# known names without the type NODATA, both with the zone's SOA (negative
# TTL = its minimum, RFC 2308).  Modes and zones are re-read at each query.

use strict;
use warnings;
use File::Temp ();
use File::Basename ();
use Cwd ();
use POSIX ();
use Time::HiRes qw(time sleep);

my $HERE = Cwd::abs_path(File::Basename::dirname(__FILE__));
our $PYTHON = $ENV{SIPDNS_PYTHON} || '/usr/bin/python3';

sub new {
    my ($class, %o) = @_;
    my $dir = File::Temp::tempdir('sipdns-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $self = bless { dir => $dir, zone_file => "$dir/zone", control => "$dir/control",
                       log_file => "$dir/queries.log", portfile => "$dir/port" }, $class;
    $self->set_zone($o{zone} // '');
    $self->set_mode($o{mode} // 'normal', $o{delay});
    open my $lf, '>', $self->{log_file} or die "SipDNS: $self->{log_file}: $!";
    close $lf;
    my $pid = fork // die "SipDNS: fork: $!";
    if (!$pid) {
        POSIX::setpgid(0, 0);
        no warnings "exec";
        exec $PYTHON, "$HERE/sipdns.py", '--zone', $self->{zone_file},
             '--control', $self->{control}, '--log', $self->{log_file},
             '--portfile', $self->{portfile}, ($o{port} ? ('--port', $o{port}) : ());
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $end = time + 10;
    until (-s $self->{portfile}) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{pid};
            die "SipDNS: sipdns.py exited (status $?)\n";
        }
        die "SipDNS: sipdns.py did not start\n" if time > $end;
        sleep 0.05;
    }
    open my $pf, '<', $self->{portfile} or die;
    ($self->{port}) = <$pf> =~ /(\d+)/;
    close $pf;
    return $self;
}

sub port { $_[0]{port} }
sub addr { "127.0.0.1:$_[0]{port}" }
sub dir  { $_[0]{dir} }

sub _write {
    my ($path, $text) = @_;
    open my $f, '>', "$path.tmp" or die "SipDNS: $path: $!";
    print $f $text;
    close $f;
    rename "$path.tmp", $path or die "SipDNS: rename $path: $!";
}

sub set_zone { my ($self, $text) = @_; _write($self->{zone_file}, $text) }

# 'normal', 'silent' (never answers), 'slow' with the delay in seconds
sub set_mode {
    my ($self, $mode, $delay) = @_;
    die "SipDNS: unknown mode $mode\n" unless $mode =~ /^(normal|silent|slow)$/;
    _write($self->{control}, $mode . (defined $delay ? " $delay" : '') . "\n");
}

sub log {
    my ($self) = @_;
    open my $f, '<', $self->{log_file} or return [];
    my @l = map { chomp; [split /\t/] } <$f>;
    close $f;
    return \@l;
}

# Queries received, optionally only for one name (case-insensitive, no
# trailing dot) and type ('NAPTR', 'SRV', 'A', 'AAAA', 'PTR').
sub queries {
    my ($self, $name, $type) = @_;
    $name = lc $name if defined $name;
    $name =~ s/\.$// if defined $name;
    return scalar grep { (!defined $name || $_->[1] eq $name) && (!defined $type || $_->[2] eq $type) }
        @{ $self->log };
}

# Ask the server directly (not through mod_sip): the answer's records as
# text lines, "RCODE <name>" first; undef when no answer came in 'timeout'.
sub ask {
    my ($self, $name, $type, %o) = @_;
    my $tcp = $o{tcp} ? 'True' : 'False';
    my $timeout = $o{timeout} // 3;
    my $py = "import sys\nfrom dnslib import DNSRecord, RCODE\n"
           . "q = DNSRecord.question(sys.argv[1], sys.argv[2])\n"
           . "try:\n    r = DNSRecord.parse(q.send('127.0.0.1', int(sys.argv[3]), tcp=$tcp, timeout=$timeout))\n"
           . "except Exception:\n    sys.exit(3)\n"
           . "print('RCODE', RCODE.get(r.header.rcode))\n"
           . "for rr in r.rr: print(rr.toZone())\n";
    open my $p, '-|', $PYTHON, '-c', $py, $name, $type, $self->{port} or die "SipDNS: $PYTHON: $!";
    my @l = <$p>;
    close $p;
    return undef if $? >> 8 == 3;
    chomp @l;
    return \@l;
}

sub clear_log { my ($self) = @_; _write($self->{log_file}, '') }

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $end = time + 5;
    while (waitpid($pid, POSIX::WNOHANG()) != $pid) {
        if (time > $end) { kill 'KILL', $pid; waitpid($pid, 0); last }
        sleep 0.02;
    }
}

sub DESTROY { local ($?, $!, $@); $_[0]->stop }

1;
