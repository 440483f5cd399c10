#!/usr/bin/perl
# t/cgi-local-target.t again with every SIP-CGI run carried to a resident
# FastCGI worker pool (SIP_CGI_FCGI, t/lib/SipCgiTest.pm; issue 18).
use strict;
use warnings;
use FindBin;
$ENV{SIP_CGI_FCGI} = 1;
my $file = "$FindBin::Bin/cgi-local-target.t";
do $file;
die $@ if $@;
