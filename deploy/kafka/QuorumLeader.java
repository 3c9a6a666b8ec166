// Prints the node id of the KRaft quorum's leader (the active controller), asked through
// the Admin API's DescribeMetadataQuorum. Run by ops/kafka_node.py with Java's
// single-file launcher: java -cp "<kafka jars>/*" QuorumLeader.java <bootstrap servers>
// How it proves who it is comes from the environment, as for the platform's clients:
// KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD.
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class QuorumLeader {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        String protocol = System.getenv().getOrDefault("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT");
        props.put("security.protocol", protocol);
        if (protocol.startsWith("SASL")) {
            String mechanism = System.getenv("KAFKA_SASL_MECHANISM");
            String module = mechanism.equals("PLAIN")
                ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
            props.put("sasl.mechanism", mechanism);
            props.put("sasl.jaas.config", module + " required username=\""
                + System.getenv("KAFKA_SASL_USERNAME") + "\" password=\""
                + System.getenv("KAFKA_SASL_PASSWORD") + "\";");
        }
        try (Admin admin = Admin.create(props)) {
            System.out.println(admin.describeMetadataQuorum().quorumInfo().get().leaderId());
        }
    }
}
