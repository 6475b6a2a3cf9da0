// TEST-ONLY: a node-opcua server, the "other implementation" the edge's asyncua-based source is checked against.
//
//   node server.js <port> [--pki DIR] [--modes None,SignAndEncrypt] [--period-ms 100]
//
// Address space (own namespace, index printed in the "ready" line):
//   Objects/pump-01                 ns=1;s=pump-01
//     counter   Double  0, then 1, 2, 3 ... every period, source timestamp = when it was set
//     ramp      Double  0.25 * counter (for deadband tests)
//     fault     Double  42 with status BadSensorFailure, always
//
// Every value set is printed as a JSON line {"event":"value",...} so a test can compare what a client
// received with what the server sent, exactly. Sessions are printed with their security mode and policy.
// Client certificates are accepted automatically (its PKI lives in --pki, a temp dir of the test).
"use strict";

const path = require("path");
const os = require("os");
const {
    OPCUAServer,
    OPCUACertificateManager,
    DataType,
    StatusCodes,
    MessageSecurityMode,
    SecurityPolicy,
} = require("node-opcua");

function option(name, fallback) {
    const i = process.argv.indexOf(name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

const port = parseInt(process.argv[2], 10);
if (!Number.isInteger(port)) {
    process.stderr.write("usage: node server.js <port> [--pki DIR] [--modes None,SignAndEncrypt] [--period-ms N]\n");
    process.exit(2);
}
const pki = option("--pki", path.join(os.tmpdir(), `assettwin-node-opcua-server-${port}`));
const modes = option("--modes", "None").split(",");
const periodMs = parseInt(option("--period-ms", "100"), 10);

async function main() {
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(pki, "server"),
        automaticallyAcceptUnknownCertificate: true,
        disableFileWatchers: true,
    });
    const securityModes = modes.map((m) => {
        if (!(m in MessageSecurityMode)) throw new Error(`unknown security mode ${m}`);
        return MessageSecurityMode[m];
    });
    const securityPolicies = [];
    if (modes.includes("None")) securityPolicies.push(SecurityPolicy.None);
    if (modes.some((m) => m !== "None")) securityPolicies.push(SecurityPolicy.Basic256Sha256);

    const server = new OPCUAServer({
        port,
        hostname: "127.0.0.1",
        securityModes,
        securityPolicies,
        allowAnonymous: true,
        serverCertificateManager,
        buildInfo: { productName: "assettwin node-opcua test server" },
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.getOwnNamespace();
    const pump = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "pump-01", nodeId: "s=pump-01" });
    const variable = (name) =>
        ns.addVariable({
            componentOf: pump,
            browseName: name,
            nodeId: `s=pump-01.${name}`,
            dataType: "Double",
            value: { dataType: DataType.Double, value: 0 },
        });
    const counter = variable("counter");
    const ramp = variable("ramp");
    const fault = variable("fault");
    const nodeId = (name) => `ns=${ns.index};s=pump-01.${name}`;

    const set = (v, name, value, status) => {
        const ts = new Date();
        v.setValueFromSource({ dataType: DataType.Double, value }, status, ts);
        emit({ event: "value", node: nodeId(name), value, status: status.name, source_ts_ms: ts.getTime() });
    };
    set(fault, "fault", 42, StatusCodes.BadSensorFailure);
    // The initial values are set (and printed) too: a client subscribing before the first tick receives them.
    set(counter, "counter", 0, StatusCodes.Good);
    set(ramp, "ramp", 0, StatusCodes.Good);

    server.on("session_activated", (session) => {
        const channel = session.channel;
        emit({
            event: "session",
            securityMode: channel ? MessageSecurityMode[channel.securityMode] : null,
            securityPolicy: channel ? channel.securityPolicy : null,
            clientUri: session.clientDescription ? session.clientDescription.applicationUri : null,
        });
    });

    await server.start();
    let n = 0;
    const timer = setInterval(() => {
        n += 1;
        set(counter, "counter", n, StatusCodes.Good);
        set(ramp, "ramp", n * 0.25, StatusCodes.Good);
    }, periodMs);

    emit({
        event: "ready",
        endpoint: server.getEndpointUrl(),
        namespace: ns.index,
        modes,
        certificateFile: server.certificateFile || null,
    });

    const shutdown = async () => {
        clearInterval(timer);
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", shutdown);
    process.on("SIGINT", shutdown);
}

main().catch((err) => {
    emit({ event: "error", message: String((err && err.stack) || err) });
    process.exit(1);
});
