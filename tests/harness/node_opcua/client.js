// TEST-ONLY: a node-opcua client, to check that the simulators' asyncua server talks to another implementation.
//
//   node client.js <endpoint> <nodeId> [--samples N] [--timeout-ms 20000] [--pki DIR]
//
// Connects without security, reads the node and its EngineeringUnits property, subscribes to it and
// prints JSON lines: {"event":"read"|"eu"|"subscribed"|"change"|"done"|"error", ...}. Exits 0 after N
// changes (the first is the value at subscription time), 3 on timeout, 1 on error.
"use strict";

const path = require("path");
const os = require("os");
const {
    OPCUAClient,
    OPCUACertificateManager,
    AttributeIds,
    TimestampsToReturn,
    MessageSecurityMode,
    SecurityPolicy,
    makeBrowsePath,
} = require("node-opcua");

function option(name, fallback) {
    const i = process.argv.indexOf(name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

function sample(dv) {
    return {
        value: dv.value ? dv.value.value : null,
        status: dv.statusCode.name,
        source_ts_ms: dv.sourceTimestamp ? dv.sourceTimestamp.getTime() : null,
    };
}

const [endpoint, nodeId] = process.argv.slice(2, 4);
if (!endpoint || !nodeId) {
    process.stderr.write("usage: node client.js <endpoint> <nodeId> [--samples N] [--timeout-ms MS] [--pki DIR]\n");
    process.exit(2);
}
const samples = parseInt(option("--samples", "3"), 10);
const timeoutMs = parseInt(option("--timeout-ms", "20000"), 10);
const pki = option("--pki", path.join(os.tmpdir(), `assettwin-node-opcua-client-${process.pid}`));

async function main() {
    const client = OPCUAClient.create({
        applicationName: "assettwin node-opcua test client",
        endpointMustExist: false,
        securityMode: MessageSecurityMode.None,
        securityPolicy: SecurityPolicy.None,
        connectionStrategy: { maxRetry: 3, initialDelay: 200, maxDelay: 1000 },
        clientCertificateManager: new OPCUACertificateManager({
            rootFolder: path.join(pki, "client"),
            automaticallyAcceptUnknownCertificate: true,
            disableFileWatchers: true,
        }),
    });
    const timer = setTimeout(() => {
        emit({ event: "timeout", after_ms: timeoutMs });
        process.exit(3);
    }, timeoutMs);

    await client.connect(endpoint);
    const session = await client.createSession();

    const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
    emit({ event: "read", node: nodeId, ...sample(dv) });

    const found = await session.translateBrowsePath(makeBrowsePath(nodeId, ".EngineeringUnits"));
    if (found.statusCode.isGood() && found.targets && found.targets.length) {
        const eu = await session.read({ nodeId: found.targets[0].targetId, attributeId: AttributeIds.Value });
        const info = eu.value.value;
        emit({
            event: "eu",
            unitId: info ? info.unitId : null,
            displayName: info && info.displayName ? info.displayName.text : null,
            namespaceUri: info ? info.namespaceUri : null,
        });
    } else {
        emit({ event: "eu", error: found.statusCode.name });
    }

    const subscription = await session.createSubscription2({
        requestedPublishingInterval: 50,
        requestedMaxKeepAliveCount: 20,
        requestedLifetimeCount: 200,
        maxNotificationsPerPublish: 0,
        publishingEnabled: true,
        priority: 1,
    });
    const item = await subscription.monitor(
        { nodeId, attributeId: AttributeIds.Value },
        { samplingInterval: 0, discardOldest: true, queueSize: 10 },
        TimestampsToReturn.Both,
    );
    let count = 0;
    let finished = false;
    item.on("changed", async (value) => {
        if (finished) return;
        count += 1;
        emit({ event: "change", node: nodeId, ...sample(value) });
        if (count >= samples) {
            finished = true;
            clearTimeout(timer);
            await subscription.terminate();
            await session.close();
            await client.disconnect();
            emit({ event: "done", changes: count });
            process.exit(0);
        }
    });
    emit({ event: "subscribed", node: nodeId });
}

main().catch((err) => {
    emit({ event: "error", message: String((err && err.stack) || err) });
    process.exit(1);
});
