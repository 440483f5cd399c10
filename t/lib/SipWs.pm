package SipWs;
# A small WebSocket client (RFC 6455) for the tests of SIP over WebSocket
# (RFC 7118): the opening handshake, masked frames, fragments, control
# frames, and raw bytes for the hostile tests.  Plain TCP (ws://), or TLS
# (wss://) when IO::Socket::SSL is installed.
#
#   my $ws = SipWs->connect(port => $t->http_port, path => '/sip') or die;
#   $ws->status == 101 or die;
#   $ws->send_text($sip_request);
#   my ($op, $payload) = $ws->recv_frame(3);
#   my $msg = $ws->recv_msg(3);            # next text/binary message
#   $ws->close(1000);

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use MIME::Base64 ();
use Digest::SHA ();
use Time::HiRes qw(time);

use constant { CONT => 0, TEXT => 1, BINARY => 2, CLOSE => 8, PING => 9, PONG => 10 };
our $DEBUG = $ENV{SIPTEST_DEBUG};

# connect(port, host, path, protocol ('sip'; undef: none), version (13),
#         key (random; '' none), method (GET), headers => [name => value],
#         upgrade ('websocket'), connection ('Upgrade'), tls => 1, request (raw
#         text instead of all of these), timeout)
# Returns the object (even when the answer is not 101: see status), or
# undef when no connection could be made.
sub connect {
    my ($class, %o) = @_;
    my $host = $o{host} // '127.0.0.1';
    my $s;
    if ($o{tls}) {
        require IO::Socket::SSL;
        $s = IO::Socket::SSL->new(PeerAddr => $host, PeerPort => $o{port}, Timeout => 5,
                                  SSL_verify_mode => 0, %{ $o{ssl} || {} }) or return undef;
    }
    else {
        $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $o{port}, Proto => 'tcp',
                                   Timeout => 5) or return undef;
    }
    $s->autoflush(1);
    my $self = bless { s => $s, buf => '', eof => 0 }, $class;
    my $key = $o{key} // MIME::Base64::encode_base64(join('', map { chr int rand 256 } 1 .. 16), '');
    my $req = $o{request};
    unless (defined $req) {
        my $proto = exists $o{protocol} ? $o{protocol} : 'sip';
        my $version = exists $o{version} ? $o{version} : 13;
        my @h = (Host => "$host:$o{port}",
                 Upgrade => $o{upgrade} // 'websocket',
                 Connection => $o{connection} // 'Upgrade');
        push @h, 'Sec-WebSocket-Version' => $version if defined $version;
        push @h, 'Sec-WebSocket-Key' => $key if length $key;
        push @h, 'Sec-WebSocket-Protocol' => $proto if defined $proto;
        push @h, @{ $o{headers} || [] };
        $req = ($o{method} // 'GET') . ' ' . ($o{path} // '/sip') . " HTTP/1.1\r\n";
        while (@h) {
            my ($n, $v) = splice @h, 0, 2;
            $req .= "$n: $v\r\n";
        }
        $req .= "Content-Length: " . length($o{body}) . "\r\n" if defined $o{body};
        $req .= "\r\n" . ($o{body} // '');
    }
    $self->{key} = $key;
    $self->raw($req);
    # the answer's head; bytes after it stay in the buffer (frames)
    my $end = time + ($o{timeout} // 5);
    while ($self->{buf} !~ /\r\n\r\n/) {
        last if $self->_fill($end - time) <= 0;
    }
    if ($self->{buf} =~ s/^(.*?\r\n)\r\n//s) {
        my $head = $1;
        $self->{head} = $head;
        ($self->{status}) = $head =~ m{^HTTP/1\.[01] (\d{3})};
        for my $l (split /\r\n/, $head) {
            $self->{headers}{ lc $1 } = $2 if $l =~ /^([^:]+):\s*(.*?)\s*$/;
        }
    }
    $self->{status} //= 0;
    print STDERR "<-- WS handshake $self->{status}\n" if $DEBUG;
    return $self;
}

sub status  { $_[0]{status} }
sub head    { $_[0]{head} // '' }
sub header  { $_[0]{headers}{ lc $_[1] } }
sub socket  { $_[0]{s} }
sub eof     { $_[0]{eof} }

# The Sec-WebSocket-Accept value the server must send for our key (§4.2.2).
sub expected_accept {
    my ($self) = @_;
    return MIME::Base64::encode_base64(
        Digest::SHA::sha1($self->{key} . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'), '');
}

sub raw {
    my ($self, $data) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($self->{s}, $data, length($data) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }
    return 1;
}

# A frame as bytes.  opts: fin (1), mask (1), rsv (0..7), key (4 bytes),
# len (the length to announce instead of the payload's), len_form (7, 16 or 64)
sub frame_bytes {
    my ($class, $op, $payload, %o) = @_;
    $payload //= '';
    my $fin = $o{fin} // 1;
    my $mask = $o{mask} // 1;
    my $len = $o{len} // length $payload;
    my $b0 = ($fin ? 0x80 : 0) | (($o{rsv} // 0) << 4) | ($op & 0x0F);
    my $form = $o{len_form} // ($len < 126 ? 7 : $len < 65536 ? 16 : 64);
    my $hdr = chr($b0);
    my $m = $mask ? 0x80 : 0;
    if ($form == 7)     { $hdr .= chr($m | $len) }
    elsif ($form == 16) { $hdr .= chr($m | 126) . pack('n', $len) }
    else                { $hdr .= chr($m | 127) . pack('Q>', $len) }
    return $hdr . $payload unless $mask;
    my $key = $o{key} // join('', map { chr int rand 256 } 1 .. 4);
    my $masked = $payload ^ substr($key x (int(length($payload) / 4) + 1), 0, length $payload);
    return $hdr . $key . $masked;
}

sub send_frame {
    my ($self, $op, $payload, %o) = @_;
    print STDERR "--> WS frame op=$op ", length($payload // ''), " bytes\n" if $DEBUG;
    return $self->raw(SipWs->frame_bytes($op, $payload, %o));
}

sub send_text   { my ($self, $t) = @_; $self->send_frame(TEXT, $t) }
sub send_binary { my ($self, $t) = @_; $self->send_frame(BINARY, $t) }
sub ping        { my ($self, $t) = @_; $self->send_frame(PING, $t // '') }

# One message in $n fragments (first TEXT, then CONT), optionally with
# control frames between them (interleave => [op, payload]).
sub send_fragments {
    my ($self, $text, $n, %o) = @_;
    my $size = int((length($text) + $n - 1) / $n) || 1;
    my @parts = $text =~ /(.{1,$size})/gs;
    for my $i (0 .. $#parts) {
        $self->send_frame($i ? CONT : TEXT, $parts[$i], fin => $i == $#parts ? 1 : 0);
        $self->send_frame(@{ $o{interleave} }) if $o{interleave} && $i < $#parts;
    }
}

sub close {
    my ($self, $code, $reason) = @_;
    $self->send_frame(CLOSE, defined $code ? pack('n', $code) . ($reason // '') : '');
}

sub _fill {
    my ($self, $timeout) = @_;
    return -1 if $self->{eof};
    my $s = $self->{s};
    if (!($s->can('pending') && $s->pending)) {
        return 0 unless IO::Select->new($s)->can_read($timeout < 0 ? 0 : $timeout);
    }
    my $n = sysread($s, my $buf, 65536);
    if (!$n) {
        $self->{eof} = 1;
        return -1;
    }
    $self->{buf} .= $buf;
    return 1;
}

# The next frame from the server: (opcode, payload, fin, masked), or () on
# timeout or end of stream.
sub recv_frame {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while (1) {
        my $b = $self->{buf};
        if (length($b) >= 2) {
            my ($b0, $b1) = unpack('CC', $b);
            my $len = $b1 & 0x7F;
            my $hl = 2;
            if ($len == 126) { $hl = 4; $len = length($b) >= 4 ? unpack('n', substr($b, 2, 2)) : -1 }
            elsif ($len == 127) { $hl = 10; $len = length($b) >= 10 ? unpack('Q>', substr($b, 2, 8)) : -1 }
            my $masked = $b1 & 0x80;
            $hl += 4 if $masked;
            if ($len >= 0 && length($b) >= $hl + $len) {
                my $payload = substr($b, $hl, $len);
                substr($self->{buf}, 0, $hl + $len, '');
                print STDERR "<-- WS frame op=", $b0 & 0x0F, " $len bytes\n$payload\n" if $DEBUG;
                return ($b0 & 0x0F, $payload, $b0 >> 7, $masked ? 1 : 0);
            }
        }
        my $left = $end - time;
        return () if $left <= 0;
        return () if $self->_fill($left) < 0;
    }
}

# The next data message's payload (text or binary), skipping pongs and
# CRLF keep-alive answers; undef on timeout, close or end of stream.
sub recv_msg {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my ($op, $p) = $self->recv_frame($left);
        return undef unless defined $op;
        return undef if $op == CLOSE;
        next if $op == PONG || $op == PING;
        next if $p eq "\r\n";
        return $p;
    }
    return undef;
}

# Is the stream closed by the server within $timeout (after any bytes)?
sub wait_eof {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while (!$self->{eof}) {
        my $left = $end - time;
        return 0 if $left <= 0;
        $self->{buf} = '' if $self->_fill($left) > 0 && length($self->{buf}) > 1 << 20;
    }
    return 1;
}

1;
