// Secrets read from files: an option declared secret (OptionSpec.secret), or a key of a string map
// that names a secret (a librdkafka `sasl.password`, see KafkaConfig.isSecret), may be given as
// `<key>_file: PATH` instead; the value is the file's content without its trailing newline.
// Under systemd, `LoadCredential=NAME:/path` puts the file in $CREDENTIALS_DIRECTORY, so
// `sasl.password_file: ${CREDENTIALS_DIRECTORY}/NAME` reads it there.
import Glibc
import TweetoscopeCore

/// The suffix of a key that gives a secret's file instead of its value.
let secretFileSuffix = "_file"

/// Largest secret file in bytes: a password or a key, not a data file.
let maxSecretBytes = 64 << 10

extension ConfigLoader {
    /// The content of the secret file named by `node` (a path, relative to `directory`), with
    /// one trailing newline (`\n` or `\r\n`) removed. Errors name the key and the file, never the
    /// content.
    static func readSecretFile(_ node: YAMLNode, directory: String, key: String,
                               errors: inout [ConfigDiagnostic]) -> String? {
        guard case .string(let path)? = convert(node, to: .path, directory: directory, key: key, errors: &errors) else {
            return nil
        }
        guard let file = fopen(path, "rb") else {
            errors.append(ConfigDiagnostic(node.mark, "\(key): cannot read the secret file \(path): \(String(cString: strerror(errno)))"))
            return nil
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { bytes += chunk[0..<n] }
            if bytes.count > maxSecretBytes {
                errors.append(ConfigDiagnostic(node.mark, "\(key): the secret file \(path) is larger than \(maxSecretBytes >> 10) KiB"))
                return nil
            }
            if n < chunk.count { break }
        }
        if bytes.last == 0x0A { bytes.removeLast(); if bytes.last == 0x0D { bytes.removeLast() } }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            errors.append(ConfigDiagnostic(node.mark, "\(key): the secret file \(path) is not UTF-8 text"))
            return nil
        }
        guard !text.isEmpty else {
            errors.append(ConfigDiagnostic(node.mark, "\(key): the secret file \(path) is empty"))
            return nil
        }
        return text
    }
}
