package SipNatTest;
# Helpers shared by t/nat.t, t/outbound.t and t/path.t (issue 17): calls
# from a UDP caller to a registered user, and what a phone sees of them.
#
#   my $n = SipNatTest->new($t);                  # $t: a SipRegTest
#   my $call = $n->invite('bob');                 # INVITE from a new UDP caller
#   my $inv = $n->udp_invite($sock, 3);           # the INVITE a UDP phone got
#   my $inv = $n->tcp_invite($conn, 3);           # ... a TCP phone got
#   $n->answer_udp($sock, $inv, 486); $n->final($call)  # -> 486 at the caller

use strict;
use warnings;
use Time::HiRes qw(time);
use SipTest qw(parse_msg rand_token response_to);

sub new {
    my ($class, $t) = @_;
    return bless { t => $t }, $class;
}

# An INVITE to $user from a new UDP caller: { sock, raw, t0 }.
sub invite {
    my ($self, $user, %o) = @_;
    my $t = $self->{t};
    my $u = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', uri => $t->aor($user), sock => $u,
                              call_id => rand_token(12) . '@nat', from_tag => rand_token(6),
                              headers => [ Contact => '<sip:caller@127.0.0.1:' . $u->sockport . '>' ]);
    my $t0 = time;
    $t->udp_send($raw, sock => $u);
    return { sock => $u, raw => $raw, t0 => $t0 };
}

# The caller's final response (Msg, undef after $timeout); a non-2xx is ACKed.
# Sets $call->{secs}: how long after the INVITE it came.
sub final {
    my ($self, $call, $timeout) = @_;
    my $t = $self->{t};
    my $end = time + ($timeout // 5);
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($call->{sock}, $left) // return undef;
        my $m = parse_msg($d);
        next unless $m->is_response && $m->code >= 200 && ($m->header('cseq') // '') =~ /INVITE/;
        $call->{secs} = time - $call->{t0};
        my $ack = $t->ack_for($call->{raw}, $m);
        $t->udp_send($ack, sock => $call->{sock}) if $ack && $m->code >= 300;
        return $m;
    }
    return undef;
}

# The next INVITE arriving on UDP socket $s (Msg), undef after $timeout.
sub udp_invite {
    my ($self, $s, $timeout) = @_;
    my $d = $self->{t}->udp_new_request($s, $timeout // 3, 'INVITE');
    return defined $d ? parse_msg($d) : undef;
}

# The next request of $method (default INVITE) on TCP connection $c.
sub tcp_invite {
    my ($self, $c, $timeout, $method) = @_;
    my $t = $self->{t};
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $m = $t->read_response($c, $left) or return undef;
        return $m if !$m->is_response && $m->method eq ($method // 'INVITE');
    }
    return undef;
}

sub answer_udp {
    my ($self, $s, $inv, $code, $reason) = @_;
    $self->{t}->udp_send(response_to($inv, $code, $reason // 'Busy Here', tag => rand_token(6)),
                         sock => $s);
}

sub answer_tcp {
    my ($self, $c, $inv, $code, $reason) = @_;
    $self->{t}->send_raw($c, response_to($inv, $code, $reason // 'Busy Here', tag => rand_token(6)));
}

1;
