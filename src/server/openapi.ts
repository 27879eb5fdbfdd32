/** The OpenAPI document of hemocount's HTTP API. */
export function openapi(lim: { maxFileBytes: number; maxFiles: number; maxPixels: number }) {
  const perClass = { type: 'object', properties: { RBC: { type: 'number' }, WBC: { type: 'number' }, Platelets: { type: 'number' } } };
  const error = { description: 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  return {
    openapi: '3.0.3',
    info: { title: 'hemocount', version: '0.1.0', description: 'Count red cells, white cells and platelets in blood smear images.' },
    paths: {
      '/api/count': {
        post: {
          summary: 'Count cells in one or more images',
          requestBody: {
            required: true,
            content: {
              'multipart/form-data': {
                schema: {
                  type: 'object',
                  properties: {
                    images: {
                      type: 'array',
                      items: { type: 'string', format: 'binary' },
                      description: `up to ${lim.maxFiles} files, ${lim.maxFileBytes} bytes and ${lim.maxPixels} pixels each`,
                    },
                    thresholds: { type: 'string', example: 'RBC=0.25,WBC=0.65,Platelets=0.35' },
                    scale: {
                      type: 'string',
                      example: 'auto',
                      description: "'auto' (default: measure the cells, rescale when off the training scale), 1 (off) or a factor 0.25-4",
                    },
                    tta: {
                      type: 'string',
                      example: 'false',
                      description: 'true: average over the image and its flips (about 3x the time; its measured effect is in the model card)',
                    },
                    white_balance: {
                      type: 'string',
                      example: 'true',
                      description: "true: make the smear's background grey first (a lamp's colour); absent: as the model was trained",
                    },
                    review: { type: 'string', example: 'RBC=0.1,WBC=0.5,Platelets=0.2' },
                  },
                  required: ['images'],
                },
              },
            },
          },
          responses: {
            200: {
              description: 'counts (the CLI JSON, plus every candidate so thresholds can change client-side)',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/CountDocument' } } },
            },
            400: error,
            413: error,
            415: error,
            422: error,
            503: { ...error, description: 'busy: the inference queue is full; see Retry-After' },
          },
        },
      },
      '/api/model': {
        get: {
          summary: "Model name, version, sha256 and decoding metadata; 'browser': the model private mode loads (URL, precision, and the input it takes)",
          responses: { 200: { description: 'model' } },
        },
      },
      '/api/model.onnx': {
        get: {
          summary:
            "The server's ONNX model file (no-cache + ETag); ?precision=int8 gives the bundled int8 model (the default; under --model fp32, the int8 version of it)",
          responses: { 200: { description: 'bytes' }, 304: { description: 'not modified' } },
        },
      },
      '/api/models/{sha256}.onnx': {
        get: {
          summary: "The model private mode loads (named in /api/model's 'browser' field): content-addressed, cached immutable",
          responses: { 200: { description: 'bytes' }, 404: { description: 'no such model' } },
        },
      },
      '/healthz': { get: { summary: 'Liveness', responses: { 200: { description: 'ok' } } } },
    },
    components: {
      schemas: {
        Error: { type: 'object', properties: { error: { type: 'string' }, status: { type: 'integer' }, file: { type: 'string' } } },
        Detection: {
          type: 'object',
          properties: {
            label: { type: 'string', enum: ['RBC', 'WBC', 'Platelets'] },
            score: { type: 'number' },
            box: { type: 'array', items: { type: 'number' }, minItems: 4, maxItems: 4 },
            uncertain: { type: 'boolean' },
          },
        },
        CountDocument: {
          type: 'object',
          properties: {
            model: { type: 'object', properties: { name: { type: 'string' }, version: { type: 'string' }, sha256: { type: 'string' } } },
            thresholds: perClass,
            review: perClass,
            images: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  file: { type: 'string' },
                  width: { type: 'integer' },
                  height: { type: 'integer' },
                  counts: perClass,
                  uncertain: perClass,
                  meanScore: perClass,
                  detections: { type: 'array', items: { $ref: '#/components/schemas/Detection' } },
                  candidates: { type: 'array', items: { $ref: '#/components/schemas/Detection' } },
                  error: { type: 'string' },
                },
              },
            },
            totals: { type: 'object' },
            mode: { type: 'string' },
          },
        },
      },
    },
  };
}
