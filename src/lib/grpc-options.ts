// gRPC channel options for our etcd clients (etcd3 runs on @grpc/grpc-js).
//
// Channelz, on by default, keeps per-call counters and trace buffers for a
// debugging service we never serve. Off, an etcd call costs about a fifth less
// CPU (0.59 ms instead of 0.71-0.82 ms per get on the 2-core test machine),
// which matters for an agent whose idle cost is a handful of etcd calls a
// second, paid once per pod (issue 10; bench/footprint.ts).
import type { IOptions } from 'etcd3';

export const ETCD_GRPC_OPTIONS: NonNullable<IOptions['grpcOptions']> = { 'grpc.enable_channelz': 0 };
