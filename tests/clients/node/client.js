// A Node.js client of Atoll's gRPC API, as automation in another language would write it:
// @grpc/grpc-js with the protos loaded at run time by @grpc/proto-loader, and protobufjs to
// decode the standard error details. Run by tests/functional/test_node_client.py:
//
//   [ATOLL_TLS_DIR=DIR] node client.js ADDRESS NAMESPACE INCLUDE_DIR...
//
// It loads every proto of protos/atoll/v1 (each service must build a client), asks
// GetVersion, lists the namespace's pods two at a time through continue_token, watches pods
// from the list's resource_version while it creates one, and sends an invalid pod to decode
// the google.rpc.BadRequest in grpc-status-details-bin. It prints one JSON object.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [address, namespace, ...includeDirs] = process.argv.slice(2);
// A deadline for the whole run, so that a hung call fails the test instead of blocking it.
const DEADLINE_MS = 60_000;
setTimeout(() => {
  console.error("client.js: no result within the deadline");
  process.exit(3);
}, DEADLINE_MS).unref();

function findProto(name) {
  for (const dir of includeDirs) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} is in none of ${includeDirs.join(", ")}`);
}

const atollDir = path.dirname(findProto("atoll/v1/cluster.proto"));
const files = fs
  .readdirSync(atollDir)
  .filter((f) => f.endsWith(".proto"))
  .map((f) => `atoll/v1/${f}`);
const definition = protoLoader.loadSync(files, {
  includeDirs,
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const atoll = grpc.loadPackageDefinition(definition).atoll.v1;
// Mutual TLS with a user's certificate when ATOLL_TLS_DIR holds ca.pem, cert.pem and key.pem
// (what a client config carries), else plain text (an --insecure coordinator on loopback).
const tlsDir = process.env.ATOLL_TLS_DIR;
const credentials = tlsDir
  ? grpc.credentials.createSsl(
      fs.readFileSync(path.join(tlsDir, "ca.pem")),
      fs.readFileSync(path.join(tlsDir, "key.pem")),
      fs.readFileSync(path.join(tlsDir, "cert.pem")),
    )
  : grpc.credentials.createInsecure();
// Every service compiles into a client constructor.
const services = Object.keys(atoll).filter((name) => typeof atoll[name] === "function" && atoll[name].service);
const cluster = new atoll.ClusterService(address, credentials);

// google.rpc.Status and BadRequest, decoded with protobufjs from the googleapis protos.
const errorRoot = new protobuf.Root();
errorRoot.resolvePath = (origin, target) => findProto(target);
errorRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = errorRoot.lookupType("google.rpc.Status");
const BadRequest = errorRoot.lookupType("google.rpc.BadRequest");

function call(method, request) {
  return new Promise((resolve, reject) => {
    cluster[method](request, { deadline: Date.now() + 20_000 }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

function pod(name, image) {
  return { pod: { metadata: { name, namespace }, spec: { containers: [{ name: "main", image }] } } };
}

function fieldViolations(err) {
  const violations = [];
  for (const raw of err.metadata.get("grpc-status-details-bin")) {
    const status = Status.decode(raw);
    for (const detail of status.details) {
      if (detail.type_url.endsWith("/google.rpc.BadRequest")) {
        for (const v of BadRequest.decode(detail.value).field_violations) {
          violations.push({ field: v.field, description: v.description });
        }
      }
    }
  }
  return violations;
}

async function main() {
  const result = { services };
  const version = await call("GetVersion", {});
  result.version = { server: version.server_version, api: version.api_version, features: version.features };

  // Page through the namespace's pods, two at a time.
  result.pages = [];
  result.listed = [];
  let token = "";
  let resourceVersion = "0";
  do {
    const page = await call("List", { kind: "KIND_POD", namespace, limit: 2, continue_token: token });
    result.pages.push(page.items.map((o) => o.pod.metadata.name));
    // Whole objects: their resource versions and specs, not only the names.
    for (const o of page.items) {
      result.listed.push({ version: String(o.pod.metadata.resource_version), image: o.pod.spec.containers[0].image });
    }
    if (resourceVersion === "0") resourceVersion = page.resource_version;
    token = page.continue_token;
  } while (token);

  // Watch from the list's version; the pod created now must come as an ADDED event.
  const watch = cluster.Watch({ kind: "KIND_POD", namespace, resource_version: resourceVersion });
  const seen = new Promise((resolve, reject) => {
    watch.on("data", (event) => {
      if (event.type === "EVENT_TYPE_ADDED" && event.object.pod.metadata.name === "from-node") {
        resolve({ type: event.type, name: event.object.pod.metadata.name });
      }
    });
    watch.on("error", (err) => {
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
  });
  await call("Create", { object: pod("from-node", "busybox") });
  result.watched = await seen;
  watch.cancel();

  // An invalid pod: INVALID_ARGUMENT with the field in standard details.
  try {
    await call("Create", { object: pod("bad-pod", "") });
    result.error = null;
  } catch (err) {
    result.error = { code: err.code, details: err.details, violations: fieldViolations(err) };
  }
  cluster.close();
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
  console.error(`client.js: ${err.stack || err}`);
  process.exit(1);
});
