package SipDigest;
# Client side of SIP digest authentication (RFC 3261 §22, RFC 2617 with
# qop=auth) for the tests, and htdigest files for the server to read.
#
#   my $c = digest_challenge($resp, 'www-authenticate');   # { realm, nonce, ... }
#   my $h = digest_credentials(challenge => $c, user => 'bob', password => 'pw',
#                              method => 'REGISTER', uri => $uri);
#   write_htdigest($path, $realm, bob => 'pw', ...);
#
# Nonce-counts come from one counter for the whole test ($SipDigest::NC),
# so they keep rising as the server requires; nc => ... overrides it.

use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use SipTest qw(rand_token);
use Exporter 'import';
our @EXPORT_OK = qw(digest_challenge digest_credentials write_htdigest digest_server);

our $NC = 0;

# The parameters of a Digest challenge in header $hdr of $m; undef if none.
sub digest_challenge {
    my ($m, $hdr) = @_;
    my $v = $m ? $m->header($hdr // 'www-authenticate') : undef;
    return undef unless $v && $v =~ /^Digest /;
    my %c;
    $c{lc $1} = defined $2 ? $2 : $3 while $v =~ /(\w+)=(?:"([^"]*)"|([^,\s]+))/g;
    return \%c;
}

# An Authorization / Proxy-Authorization value answering $o{challenge}
# (qop => 'none' leaves out qop, nc and cnonce; qop => 'auth-int' signs
# $o{body} too, RFC 2617 §3.2.2.3).
sub digest_credentials {
    my (%o) = @_;
    my $c = $o{challenge} or return 'Digest none';
    my $nc = $o{nc} // sprintf('%08x', ++$NC);
    my $cnonce = rand_token(8);
    my $ha1 = md5_hex("$o{user}:$c->{realm}:$o{password}");
    my $ha2 = md5_hex("$o{method}:$o{uri}");
    if (($o{qop} // 'auth') eq 'none') {     # RFC 2069 style, as old phones send
        my $resp = md5_hex("$ha1:$c->{nonce}:$ha2");
        return qq{Digest username="$o{user}", realm="$c->{realm}", nonce="$c->{nonce}", uri="$o{uri}", }
             . qq{response="$resp", algorithm=MD5};
    }
    my $qop = $o{qop} // 'auth';
    $ha2 = md5_hex("$o{method}:$o{uri}:" . md5_hex($o{body} // '')) if $qop eq 'auth-int';
    my $resp = md5_hex("$ha1:$c->{nonce}:$nc:$cnonce:$qop:$ha2");
    return qq{Digest username="$o{user}", realm="$c->{realm}", nonce="$c->{nonce}", uri="$o{uri}", }
         . qq{response="$resp", algorithm=MD5, qop=$qop, nc=$nc, cnonce="$cnonce"};
}

# Options for SipTest->new (or a subclass): digest authentication with
# SipAuth On in <Location "/">, AuthName $o{realm}, an htdigest file of
# $o{users} ({ user => password }); $o{conf} adds server config lines
# before it, $o{location} lines inside the <Location>, $o{after} lines
# after it; every other option passes through.
#   SipTest->new(digest_server(realm => 'x', users => { alice => 'pw' }, vhost_conf => ...))
sub digest_server {
    my (%o) = @_;
    my $realm = delete $o{realm};
    my %users = %{ delete $o{users} || {} };
    my $MODDIR = $SipTest::MODDIR;
    my @conf = ("LoadModule authn_core_module $MODDIR/mod_authn_core.so",
                "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
                @{ delete $o{conf} || [] },
                '<Location "/">', '    SipAuth On', "    AuthName \"$realm\"",
                '    AuthUserFile @DIR@/users.htdigest', @{ delete $o{location} || [] }, '</Location>',
                @{ delete $o{after} || [] }, '');
    my $setup = delete $o{setup};
    return (server_conf => join("\n", @conf),
            setup => sub { write_htdigest($_[0]->dir . '/users.htdigest', $realm, %users);
                           $setup->(@_) if $setup },
            %o);
}

# An htdigest file: user:realm:MD5(user:realm:password), readable by httpd.
sub write_htdigest {
    my ($path, $realm, %pw) = @_;
    open(my $fh, '>', $path) or die "$path: $!";
    print $fh "$_:$realm:" . md5_hex("$_:$realm:$pw{$_}") . "\n" for sort keys %pw;
    close $fh or die "$path: $!";
    chmod 0644, $path;
}

1;
