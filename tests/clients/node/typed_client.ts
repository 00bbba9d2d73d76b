// A TypeScript client of Atoll's gRPC API written against types generated from our protos by
// proto-loader-gen-types (@grpc/proto-loader's generator): tests/functional/test_node_client.py
// generates them into a scratch directory beside a copy of this file and type-checks both with
// tsc --strict, so a proto change that breaks a typed client fails the test. It pages through
// a namespace's pods with limit and continue_token, as client.js does at run time.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "./gen/cluster";
import type { ListRequest } from "./gen/atoll/v1/ListRequest";
import type { ListResponse__Output } from "./gen/atoll/v1/ListResponse";
import type { Pod__Output } from "./gen/atoll/v1/Pod";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function podPages(
  address: string,
  credentials: grpc.ChannelCredentials,
  files: string[],
  includeDirs: string[],
  namespace: string,
  pageSize: number,
): Promise<string[][]> {
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs });
  const proto = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  const client = new proto.atoll.v1.ClusterService(address, credentials);
  const pages: string[][] = [];
  return new Promise((resolve, reject) => {
    const next = (token: string): void => {
      const request: ListRequest = { kind: "KIND_POD", namespace, limit: pageSize, continue_token: token };
      client.List(request, (err: grpc.ServiceError | null, response?: ListResponse__Output) => {
        if (err !== null || response === undefined) {
          client.close();
          reject(err ?? new Error("List answered nothing"));
          return;
        }
        const pods: Pod__Output[] = response.items.flatMap((item) => (item.pod ? [item.pod] : []));
        pages.push(pods.map((pod) => pod.metadata?.name ?? ""));
        if (response.continue_token) {
          next(response.continue_token);
        } else {
          client.close();
          resolve(pages);
        }
      });
    };
    next("");
  });
}
