package SipVictim;
# A bystander for the relay tests: UDP and TCP listeners on one loopback
# port the test owns.  Whatever reaches it was relayed by the server.
#
#   my $v = SipVictim->new;   $v->port;   $v->udp;   my $bytes = $v->got(0.5);

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);
use SipTest ();

sub new {
    my ($class) = @_;
    my $port = SipTest::free_port();
    my $udp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'udp')
        or die "victim udp: $!";
    my $tcp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
                                    Listen => 50, ReuseAddr => 1) or die "victim tcp: $!";
    return bless { port => $port, udp => $udp, tcp => $tcp, conns => [] }, $class;
}

sub port { $_[0]{port} }
sub udp  { $_[0]{udp} }

# Everything that arrived within $secs: UDP datagrams and bytes on any TCP
# connection (accepted as they come), concatenated.
sub got {
    my ($self, $secs) = @_;
    my $got = '';
    my $end = time + $secs;
    while ((my $left = $end - time) > 0) {
        my $sel = IO::Select->new($self->{udp}, $self->{tcp}, @{ $self->{conns} });
        for my $h ($sel->can_read($left)) {
            if ($h == $self->{tcp}) {
                my $c = $self->{tcp}->accept;
                push @{ $self->{conns} }, $c if $c;
                next;
            }
            my $buf;
            if ($h == $self->{udp}) { recv($h, $buf, 70000, 0) }
            elsif (!sysread($h, $buf, 70000)) { $self->{conns} = [ grep { $_ != $h } @{ $self->{conns} } ] }
            $got .= $buf // '';
        }
    }
    return $got;
}

1;
