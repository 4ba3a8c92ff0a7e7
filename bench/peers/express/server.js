// The SoftStore seed document's Express handler (../shared/seeds/000_*.txt, "POST Webhook Processing + Product
// Delivery"), completed as its Recommended Flow says: validate the signature, verify the order with
// GET /orders/info/{id}, generate the key, POST it to the delivery URL, answer 200. Inline, nothing stored.
// Two completions where the seed is a sketch, so that the peer is as strong as a careful seller would write it:
// the JWT is fetched once and reused until the API refuses it (the seed fetches one per webhook), and the HTTP
// client keeps connections alive (axios with a keep-alive agent). Its console.log lines stay: the daemon logs too.
// Configured by the environment: API_KEY, API_BASE (…/api/v1), PORT (0: any free port), LOG_FILE (where console
// lines go, as the daemon's go to its log file). Prints "READY <port>" on stdout once listening.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const util = require("util");
const express = require("express");
const axios = require("axios");

const logFile = fs.createWriteStream(process.env.LOG_FILE || "/dev/null", { flags: "a" });
console.log = (...args) => logFile.write(util.format(...args) + "\n");
console.error = console.log;

const API_KEY = process.env.API_KEY;
const API_BASE = process.env.API_BASE;
const client = axios.create({ httpAgent: new http.Agent({ keepAlive: true, maxSockets: 64 }) });
const app = express();
app.use(express.json());

let jwt = null;
async function token(renew) {
  if (jwt === null || renew) {
    const auth = await client.post(`${API_BASE}/auth/api-key/create`, {}, { headers: { "X-API-KEY": API_KEY } });
    // The API reference answers {access_token, expires_in}; the seed's sample reads data.access_token: both.
    jwt = auth.data.access_token ?? auth.data.data.access_token;
  }
  return jwt;
}

async function call(method, url, data) {
  for (const renew of [false, true]) {
    try {
      return await client.request({ method, url, data, headers: { Authorization: `Bearer ${await token(renew)}` } });
    } catch (error) {
      if (renew || !error.response || error.response.status !== 401) throw error;
    }
  }
}

function licenceKey() {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const bytes = crypto.randomBytes(20);
  let key = "";
  for (let i = 0; i < 20; i++) {
    key += alphabet[bytes[i] % alphabet.length] + (i % 5 === 4 && i < 19 ? "-" : "");
  }
  return key;
}

app.post("/webhook", async (req, res) => {
  try {
    const payload = req.body;
    const hashedApiKey = crypto.createHash("sha1").update(API_KEY).digest("hex");
    const expected = crypto.createHash("sha1").update(hashedApiKey + payload.id_order).digest("hex");
    if (expected !== payload.signature) {
      return res.status(403).send("Invalid signature");
    }
    const orderInfo = await call("get", `${API_BASE}/orders/info/${payload.id_order}`);
    console.log(orderInfo.data);
    const count = orderInfo.data.data.count || 1;
    const keys = Array.from({ length: count }, licenceKey);
    const response = await call("post", `${API_BASE}/orders/delivery/${payload.token}`, {
      text: `Thank you for order ${payload.id_order}:\n${keys.join("\n")}`,
      download: false,
    });
    console.log(response.data);
    return res.status(200).send("Delivered");
  } catch (error) {
    console.error(error.response?.data ?? error.message);
    return res.status(500).send("Delivery error");
  }
});

const server = app.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
server.keepAliveTimeout = 5000;
